//! comfy-table tables: box drawing on a terminal, plain ASCII elsewhere (logs, cron mail, tests).

use comfy_table::{presets, ContentArrangement, Table};
use std::io::IsTerminal;

/// A table with `headers`, styled for where stdout goes.
pub fn new(headers: &[&str]) -> Table {
    let mut table = styled();
    table.set_header(headers.iter().copied());
    table
}

fn styled() -> Table {
    let mut table = Table::new();
    if std::io::stdout().is_terminal() {
        table
            .load_style(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic);
    } else {
        table
            .load_style(presets::ASCII_BORDERS_ONLY_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled);
    }
    table
}

/// Two-column "field: value" table for `show` commands.
pub fn fields(rows: &[(&str, String)]) -> Table {
    let mut table = styled();
    for (k, v) in rows {
        table.add_row([k.to_string(), v.clone()]);
    }
    table
}
