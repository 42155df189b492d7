//! The progress bar of a load: on stderr when stderr is a terminal (here a
//! pseudo-terminal from util-linux's `script`), whatever stdout is; none
//! when stderr is a pipe.

mod support;

use std::process::{Command, Stdio};

use support::*;

#[test]
fn progress_shows_on_a_terminal_stderr_even_when_stdout_is_a_file() {
    let serve = Serve::start(1, &[]);
    let dir = std::env::temp_dir().join(format!("grpc-lb-progress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("out.json");
    let typescript = dir.join("typescript");
    // `script` runs the command on a pseudo-terminal and copies what it
    // writes there to the typescript; stdout goes to a file.
    let command = format!(
        "{BIN} call {} --duration 1 --rps 50 --concurrency 2 --json > {}",
        serve.target(),
        json.display()
    );
    let status = Command::new("script")
        .args(["-q", "-e", "-c", &command])
        .arg(&typescript)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("util-linux's script runs");
    assert!(status.success(), "{status}");
    let shown = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(shown.contains("of 1s: "), "{shown}");
    assert!(shown.contains(" calls, 0 failed, "), "{shown}");
    let report: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&json).unwrap().trim()).unwrap();
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    let _ = std::fs::remove_dir_all(&dir);

    // With stderr a pipe: nothing on it.
    let output = grpc_lb(&["call", &serve.target(), "--duration", "0.3", "--json"]);
    assert_eq!(stderr_of(&output), "");
}
