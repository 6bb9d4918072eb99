//! Every seed and every saved finding of every target, through its property: a crash once
//! found stays a regression test.

use std::path::Path;

fn run(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for dir in [root.join("seeds").join(target), root.join("regressions").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            check(&std::fs::read(&path).unwrap());
            ran += 1;
        }
    }
    assert!(ran > 0, "no seeds for {target}");
}

#[test]
fn seeds_and_regressions_hold() {
    run("command_line", cloudpop_fuzz::command_line::check);
    run("sasl", cloudpop_fuzz::sasl::check);
    run("proxy_header", cloudpop_fuzz::proxy_header::check);
    run("dot_stuffing", cloudpop_fuzz::dot_stuffing::check);
    run("crlf_and_headers", cloudpop_fuzz::crlf_and_headers::check);
    run("protocol_machine", cloudpop_fuzz::protocol_machine::check);
    run("lmtp", cloudpop_fuzz::lmtp::check);
    run("import_parsers", cloudpop_fuzz::import_parsers::check);
}
