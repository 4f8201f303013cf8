//! Process lifecycle: dockwatch keeps collecting and stops on SIGTERM even when the reader of
//! its log output has gone away (`dockwatch … | head`), and a dead engine address does not
//! keep it from becoming healthy.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn broken_log_pipe_neither_stalls_collection_nor_blocks_shutdown() {
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dockwatch"))
        .args([
            "--web.listen-address",
            &listen,
            "--collect.interval",
            "1s",
            "--docker.host",
            "https://127.0.0.1:1",
            "--log.format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting dockwatch");

    // Read the first log line, then close both pipes, as `| head -1` would.
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("starting dockwatch"), "{first}");
    drop(child.stdout.take());

    // Cycles keep completing (each one logs a warning into the broken pipe).
    let deadline = Instant::now() + Duration::from_secs(15);
    let cycles = loop {
        let body = ureq::get(&format!("http://{listen}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        let m = common::Metrics::parse(&body);
        let cycles = m
            .get("dockwatch_collection_cycles_total", &[])
            .unwrap_or(0.0);
        if cycles >= 3.0 || Instant::now() > deadline {
            break cycles;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(cycles >= 3.0, "only {cycles} cycles with a broken log pipe");
    let health = ureq::get(&format!("http://{listen}/healthz"))
        .call()
        .unwrap();
    assert_eq!(health.status(), 200);

    // SIGTERM still stops it promptly.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "dockwatch ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}
