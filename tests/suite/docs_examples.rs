//! The README's quick start and the cloud-mode page's example, run as written: the commands are
//! read out of the Markdown, with `cargo run --release --` and `cloudpop` meaning the binary
//! under test, and only the S3 and Redis addresses and keys swapped for the test's own servers.
//! Both use the documented fixed ports (1110, 1995, 9110 and the second frontend's), so they
//! run one after the other in one test.

use crate::common::cloud::{Redis, S3, S3_ACCESS_KEY, S3_SECRET_KEY};
use crate::common::{BIN, eventually, http_get};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The lines of the first ```sh block after `heading` in a Markdown file, comments dropped.
fn sh_block(file: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap();
    let from = text.find(heading).unwrap_or_else(|| panic!("{heading} not in {file}"));
    let block = &text[from..];
    let start = block.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + block[start..].find("```").expect("the block's end");
    block[start..end].lines().map(str::to_owned).collect()
}

/// A `cloudpop serve` started from a documented command line, stopped when dropped.
struct Served(Child);

impl Served {
    /// Starts `args` in `cwd` and waits for every listener the command announces.
    fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)], listeners: usize) -> Self {
        let log = std::fs::File::create(cwd.join(format!("serve-{}.log", args.len()))).unwrap();
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut announced = Vec::new();
        while announced.len() < listeners {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("`cloudpop {}` exited after announcing {announced:?}", args.join(" "));
            }
            announced.push(line.trim().to_owned());
        }
        Self(child)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one documented shell line with `cloudpop` on the PATH; its standard output.
fn shell(cwd: &Path, line: &str, env: &[(&str, &str)]) -> String {
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["-c", line])
        .current_dir(cwd)
        .env("PATH", path)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "`{line}` failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn the_quick_start_and_the_cloud_example_run_as_written() {
    quick_start();
    cloud_example();
}

fn quick_start() {
    let dir = tempfile::tempdir().unwrap();
    let serve = sh_block("README.md", "## The two commands");
    assert_eq!(serve, ["cargo run --release -- serve"]);
    let served = Served::start(dir.path(), &["serve"], &[], 3);
    let as_binary = |line: &str| line.replace("cargo run --release --", "cloudpop");
    let lines = sh_block("README.md", "## Quick start");
    let commands: Vec<&String> = lines.iter().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert_eq!(commands.len(), 4, "{commands:?}");
    for line in &commands[..2] {
        shell(dir.path(), &as_binary(line), &[]);
    }
    for line in &commands[2..] {
        let message = shell(dir.path(), line, &[]);
        assert!(message.contains("Hi Alice!"), "`{line}` printed {message:?}");
    }
    // The documented operations port answers too.
    let (status, _) = http_get("127.0.0.1:9110".parse().unwrap(), "/healthz");
    assert_eq!(status, 200);
    drop(served);
}

fn cloud_example() {
    let (s3, redis) = (S3::start(), Redis::start());
    let dir = tempfile::tempdir().unwrap();
    let lines = sh_block("docs/cloud-mode.md", "# Cloud mode");
    // The TOML as written, pointed at the test's servers.
    let toml_start = lines.iter().position(|l| l.starts_with("cat > cloud.toml")).unwrap() + 1;
    let toml_end = toml_start + lines[toml_start..].iter().position(|l| l == "TOML").unwrap();
    let toml: Vec<String> = lines[toml_start..toml_end]
        .iter()
        .map(|l| match l.split(" = ").next().unwrap_or_default() {
            "s3_endpoint" => format!("s3_endpoint = \"{}\"", s3.endpoint()),
            "redis_url" => format!("redis_url = \"{}\"", redis.url()),
            "s3_access_key_id" => format!("s3_access_key_id = \"{S3_ACCESS_KEY}\""),
            _ => l.clone(),
        })
        .collect();
    let bucket = toml.iter().find_map(|l| l.strip_prefix("s3_bucket = \"")?.split('"').next()).expect("s3_bucket");
    s3.bucket(bucket);
    std::fs::write(dir.path().join("cloud.toml"), toml.join("\n")).unwrap();
    let env = [("CLOUDPOP_S3_SECRET_ACCESS_KEY", S3_SECRET_KEY)];

    // Both frontends, as written (their data directories moved into the test's own).
    let frontends: Vec<Served> = lines
        .iter()
        .filter(|l| l.starts_with("cloudpop serve "))
        .map(|line| {
            let line = line.trim_end_matches('&').trim().replace("/tmp/", &format!("{}/", dir.path().display()));
            let args: Vec<&str> = line.split_whitespace().skip(1).collect();
            let listeners = args.iter().filter(|a| ["--pop3", "--pop3s", "--ops"].contains(a)).count();
            Served::start(dir.path(), &args, &env, listeners)
        })
        .collect();
    assert_eq!(frontends.len(), 2, "two frontends in the example");
    for line in lines.iter().filter(|l| l.starts_with("echo ") || l.starts_with("printf ")) {
        shell(dir.path(), line, &env);
    }
    let curl = lines.iter().find(|l| l.starts_with("curl ")).expect("the curl line");
    let message = shell(dir.path(), curl, &env);
    assert!(message.contains("from the cloud"), "{message:?}");
    // Both operations listeners, on their documented ports.
    eventually("the second frontend's operations port", || {
        http_get("127.0.0.1:9111".parse().unwrap(), "/readyz").0 == 200
    });
    drop(frontends);
}
