//! Every usage error docs/cli.md lists, run as it is written there: exit 2,
//! exactly the documented line on stderr, nothing on stdout.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

const DOC: &str = include_str!("../../../docs/cli.md");

/// The `$ command` / message pairs of the "Every usage error" section.
fn documented() -> Vec<(String, String)> {
    let section = DOC
        .split("\n## Every usage error\n")
        .nth(1)
        .expect("docs/cli.md has a section \"Every usage error\"");
    let block = section
        .split("```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section holds a text block");
    let lines: Vec<&str> = block.lines().collect();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let command = lines[i]
            .strip_prefix("$ ")
            .unwrap_or_else(|| panic!("a command line: {:?}", lines[i]));
        let message = lines
            .get(i + 1)
            .filter(|line| !line.starts_with("$ "))
            .unwrap_or_else(|| panic!("{command} is followed by its message"));
        pairs.push((command.to_owned(), (*message).to_owned()));
        i += 2;
    }
    pairs
}

/// Splits a command line as a POSIX shell would for these commands: words
/// by spaces, '...' and "..." quoting, and $'...' with `\n`.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    word.push(c);
                }
            }
            '$' if chars.peek() == Some(&'\'') => {
                chars.next();
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '\'' => break,
                        '\\' => match chars.next() {
                            Some('n') => word.push('\n'),
                            Some(other) => word.push(other),
                            None => {}
                        },
                        c => word.push(c),
                    }
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn the_shell_words_are_split_as_a_shell_splits_them() {
    assert_eq!(
        shell_words(r#"a 'b c' "d e" $'f\ng' h"#),
        ["a", "b c", "d e", "f\ng", "h"]
    );
    assert_eq!(shell_words("x '' y"), ["x", "", "y"]);
}

#[test]
fn every_documented_usage_error_is_one_line_and_exit_2() {
    let cases = documented();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/protos");
    for (command, message) in &cases {
        let words = shell_words(command);
        assert_eq!(words[0], "grpc-lb", "{command}");
        let output = run_in(&protos, &words[1..]);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert_eq!(stderr, format!("{message}\n"), "{command}");
        assert!(output.stdout.is_empty(), "{command}");
    }
}

/// Each `grpc-lb: error:` line shown anywhere in docs/cli.md is one of the
/// section's, so that the table test runs them all.
#[test]
fn every_usage_error_shown_in_the_docs_is_in_the_list() {
    let listed: Vec<String> = documented().into_iter().map(|(_, m)| m).collect();
    let shown: Vec<&str> = DOC
        .lines()
        .filter(|line| line.starts_with("grpc-lb: error: "))
        .collect();
    assert!(shown.len() > listed.len(), "the examples and the list");
    for line in shown {
        assert!(
            listed.iter().any(|m| m == line),
            "{line:?} is shown in docs/cli.md but not in \"Every usage error\""
        );
    }
}

/// Runs the binary with `args` in `dir`, to completion (at most [`LIMIT`]).
fn run_in(dir: &Path, args: &[String]) -> std::process::Output {
    let child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start grpc-lb");
    let id = child.id();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match result.recv_timeout(LIMIT) {
        Ok(output) => output.expect("grpc-lb ran"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            panic!("grpc-lb {args:?} ran longer than {LIMIT:?}");
        }
    }
}
