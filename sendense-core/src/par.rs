//! Independent per-disk steps side by side.
//!
//! Most steps of a backup run one external tool per disk (`qemu-img`, `qemu-nbd`), each taking
//! a few milliseconds of start-up; running them for all disks at once keeps a VM's backup from
//! paying that once per disk.

/// At most this many run at once.
const WIDTH: usize = 8;

/// `f` applied to every item, on up to [`WIDTH`] threads at once, results in item order.
pub(crate) fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let mut out = Vec::with_capacity(items.len());
    for batch in items.chunks(WIDTH) {
        std::thread::scope(|s| {
            let handles: Vec<_> = batch.iter().map(|item| s.spawn(|| f(item))).collect();
            for h in handles {
                match h.join() {
                    Ok(r) => out.push(r),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_and_runs_every_item() {
        let items: Vec<u32> = (0..20).collect();
        let out = super::map(&items, |i| {
            std::thread::sleep(std::time::Duration::from_millis(u64::from(20 - i)));
            i * 2
        });
        assert_eq!(out, (0..20).map(|i| i * 2).collect::<Vec<_>>());
    }
}
