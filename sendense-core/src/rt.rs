//! Running async work from the synchronous API: inside a multi-threaded tokio runtime the
//! current one is used (`block_in_place`), elsewhere a small runtime is started.

use crate::error::{Error, Result};
use std::future::Future;

/// Runs `fut` to completion from synchronous code.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(fut)))
        }
        Ok(_) => Err(Error::internal(
            "a synchronous Sendense call was made from a current-thread tokio runtime; use a multi-threaded runtime",
        )),
        // The copy engine needs every core: a multi-threaded runtime, not a current-thread one.
        Err(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(fut))
            .map_err(|e| Error::internal(format!("starting a runtime: {e}"))),
    }
}
