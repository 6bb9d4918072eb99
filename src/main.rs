//! The `cloudpop` command: `serve`, `account ...`, `deliver`, `import`, `check` and
//! `admin ...`; each command group is a file of [`cli`].

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // The blocking pool (file store operations, password hashing) is bounded by configuration:
    // tokio's default of 512 threads lets a login storm on the file store grow hundreds of
    // threads that help nothing on a few cores.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cli.blocking_threads())
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what is wrong, whatever RUST_BACKTRACE says: a configuration
            // mistake is not a crash. A cause is added unless the message already quotes it.
            let mut line = e.to_string();
            for cause in e.chain().skip(1).map(ToString::to_string) {
                if !line.contains(&cause) {
                    line = format!("{line}: {cause}");
                }
            }
            eprintln!("cloudpop: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}
