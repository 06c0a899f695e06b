//! `weft init`'s command line: arbitrary arguments (NUL-separated) through
//! clap, the settings' validation and the rendering of both families. A
//! refused uid 0 or gid 0 never renders rules.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use mesh_init::{Family, InitArgs};

#[derive(Debug, Parser)]
#[command(name = "weft-init")]
struct Cli {
    #[command(flatten)]
    init: InitArgs,
}

fuzz_target!(|data: &[u8]| {
    let args = data.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned());
    let Ok(cli) = Cli::try_parse_from(std::iter::once("weft-init".to_owned()).chain(args)) else { return };
    let rules = cli.init.rules();
    let problems = rules.problems();
    if rules.proxy_uid == 0 || rules.proxy_gid == Some(0) {
        assert!(!problems.is_empty(), "uid/gid 0 accepted: {rules:?}");
    }
    if problems.is_empty() {
        for family in [Family::V4, Family::V6] {
            let script = rules.render(family);
            assert!(script.ends_with("COMMIT\n"));
            // One rule per line: nothing from the arguments can start a line.
            for line in script.lines() {
                assert!(
                    line.starts_with('#') || line.starts_with('*') || line.starts_with(':') || line.starts_with("-A ") || line == "COMMIT",
                    "{line:?}"
                );
            }
        }
    }
});
