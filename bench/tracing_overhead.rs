//! What tracing costs: full POP3 sessions per second, session latency and gRPC delivery latency
//! with traces off, on at 100% sampling against a real OTLP/gRPC receiver, and on against a
//! black-holed collector (accepts connections, never answers). Run with
//! `cargo bench --bench tracing_overhead`; the README has the figures from the development
//! machine. A benchmark, not a test: it prints numbers and asserts nothing about speed.

#[path = "../tests/suite/common/mod.rs"]
mod common;

use common::Server;
use common::otlp::Collector;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const SESSIONS_PER_CLIENT: usize = 60;
const ACCOUNTS: usize = 16;
const MESSAGES: usize = 5;
const DELIVERIES: usize = 200;

enum Mode {
    Off,
    Receiver(SocketAddr),
    BlackHole(SocketAddr),
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs the workload against a fresh server; prints one result line.
fn run(rt: &tokio::runtime::Runtime, label: &str, mode: &Mode) {
    let mut env: Vec<(String, String)> =
        common::api::token_env().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.push(("CLOUDPOP_AUTH_FAILURE_DELAY_MS".into(), "0".into()));
    match mode {
        Mode::Off => {}
        Mode::Receiver(addr) | Mode::BlackHole(addr) => {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), format!("http://{addr}")));
            env.push(("OTEL_TRACES_SAMPLER".into(), "always_on".into()));
        }
    }
    let server = Server::start_with(tempfile::tempdir().unwrap(), env);
    let body = common::message("benchmark", 300); // about 10 KB
    for a in 0..ACCOUNTS {
        server.add_account(&format!("user{a}"), "bench password");
        for _ in 0..MESSAGES {
            server.deliver(&format!("user{a}"), &body);
        }
    }
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let addr = server.pop3;
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity(SESSIONS_PER_CLIENT);
                for i in 0..SESSIONS_PER_CLIENT {
                    // Each client has its own accounts (t, t + CLIENTS, ...): no session waits
                    // for another's maildrop lock.
                    let user = format!("user{}", t + CLIENTS * (i % (ACCOUNTS / CLIENTS)));
                    let began = Instant::now();
                    let mut c = common::Client::login(addr, &user, "bench password");
                    assert!(c.cmd("STAT").starts_with("+OK"));
                    assert_eq!(c.lines("UIDL").len(), MESSAGES);
                    for n in 1..=MESSAGES {
                        assert!(c.multi(&format!("RETR {n}")).0.starts_with("+OK"));
                    }
                    assert!(c.cmd("QUIT").starts_with("+OK"));
                    latencies.push(began.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let elapsed = started.elapsed();
    latencies.sort();

    let api = server.api.unwrap();
    let mut delivery: Vec<Duration> = rt.block_on(async {
        let mut ingest = common::api::ingest(api, Some(common::api::INGEST_TOKEN)).await;
        let mut out = Vec::with_capacity(DELIVERIES);
        for _ in 0..DELIVERIES {
            let began = Instant::now();
            common::api::deliver(&mut ingest, &["user0"], "", &body).await.unwrap();
            out.push(began.elapsed());
        }
        out
    });
    delivery.sort();
    let dropped = server.metrics().get("cloudpop_spans_dropped_total{}");
    println!(
        "{label:<28} {:>7.1} sessions/s   session p50 {:>6.1} ms  p99 {:>6.1} ms   deliver p50 {:>5.2} ms  p99 {:>5.2} ms   spans dropped {dropped}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        percentile(&delivery, 0.5).as_secs_f64() * 1e3,
        percentile(&delivery, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery: nothing to list.
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (receiver, receiver_addr, _stop) = Collector::start(&rt);
    // Accepts connections and never reads or answers: exports hang until their timeout.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_addr = hole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in hole.incoming().flatten() {
            held.push(conn);
        }
    });

    println!(
        "{CLIENTS} clients x {SESSIONS_PER_CLIENT} full sessions (login, STAT, UIDL, RETR x{MESSAGES} of 10 KB, QUIT); {DELIVERIES} gRPC deliveries"
    );
    for round in 1..=3 {
        println!("round {round}");
        run(&rt, "tracing off", &Mode::Off);
        run(&rt, "tracing on, 100% sampled", &Mode::Receiver(receiver_addr));
        run(&rt, "collector black-holed", &Mode::BlackHole(hole_addr));
    }
    println!("spans received by the OTLP receiver: {}", receiver.spans().len());
}
