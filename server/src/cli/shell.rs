//! `corekv-cli` with no command: an interactive shell, as `redis-cli` has. Each line is a
//! command as in the one-shot form (`get user:1`, `put k "a value"`, `scan "" ""`), run on one
//! connection kept for the session; results print as in the one-shot form (`--output json`
//! too), failures on standard error, and the shell goes on. `help` lists the commands, `help
//! CMD` explains one, `quit` or end of input leaves. On a terminal, lines can be edited and
//! earlier ones recalled (history kept in `~/.corekv_cli_history`); from a pipe, lines are
//! read as they come, without a prompt.

use std::io::{BufRead, IsTerminal};

use clap::Parser;

use super::Command;
use super::commands::Session;
use super::output::Printer;

/// One shell line, parsed like the one-shot command line without its options.
#[derive(Debug, Parser)]
#[command(name = "", no_binary_name = true, disable_version_flag = true)]
struct Line {
    #[command(subcommand)]
    command: Command,
}

/// Runs the shell until `quit` or the end of input; its exit status (0, or 2 if a line could
/// not be read).
pub async fn run(session: &mut Session, printer: &mut Printer<'_>) -> u8 {
    let interactive = std::io::stdin().is_terminal();
    let mut editor = if interactive {
        match rustyline::DefaultEditor::new() {
            Ok(editor) => Some(editor),
            Err(e) => {
                eprintln!("corekv-cli: no line editing ({e}); reading plain lines");
                None
            }
        }
    } else {
        None
    };
    let history = std::env::var_os("HOME")
        .map(|home| std::path::Path::new(&home).join(".corekv_cli_history"));
    if let (Some(editor), Some(path)) = (editor.as_mut(), history.as_ref()) {
        let _ = editor.load_history(path);
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        let line = match editor.as_mut() {
            Some(editor) => match editor.readline("corekv> ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    line
                }
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(rustyline::error::ReadlineError::Eof) => break,
                Err(e) => {
                    eprintln!("corekv-cli: cannot read a line: {e}");
                    return super::EXIT_USAGE;
                }
            },
            None => match lines.next() {
                Some(Ok(line)) => line,
                None => break,
                Some(Err(e)) => {
                    eprintln!("corekv-cli: cannot read a line: {e}");
                    return super::EXIT_USAGE;
                }
            },
        };
        let words = match split_words(&line) {
            Ok(words) => words,
            Err(e) => {
                eprintln!("(error) {e}");
                continue;
            }
        };
        match words.first().map(String::as_str) {
            None => continue,
            Some("quit" | "exit") => break,
            _ => {}
        }
        let command = match Line::try_parse_from(&words) {
            Ok(line) => line.command,
            Err(e) => {
                // `help`, `help CMD` and mistakes alike: clap's own text.
                let _ = e.print();
                continue;
            }
        };
        if let Err(f) = session.execute(&command, printer).await {
            printer.report(&f, "(error) ");
        }
    }
    if let (Some(editor), Some(path)) = (editor.as_mut(), history.as_ref()) {
        let _ = editor.save_history(path);
    }
    0
}

/// Splits a shell line into words: whitespace separates them, double or single quotes group
/// (`""` is an empty word). Backslashes are left in place for the key and value escapes,
/// except `\"` inside double quotes, which is a quote.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '"' | '\'' => {
                let quote = c;
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(c) if c == quote => break,
                        Some('\\') if quote == '"' && chars.peek() == Some(&'"') => {
                            chars.next();
                            w.push('"');
                        }
                        Some(c) => w.push(c),
                        None => return Err(format!("unclosed {quote}")),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_spaces_and_group_in_quotes() {
        let w = |s: &str| split_words(s).unwrap();
        assert_eq!(w("get  user:1"), ["get", "user:1"]);
        assert_eq!(w(r#"put k "a value""#), ["put", "k", "a value"]);
        assert_eq!(w(r#"scan "" """#), ["scan", "", ""]);
        assert_eq!(w(r"put 'a\x00b' '\xff'"), ["put", r"a\x00b", r"\xff"]);
        assert_eq!(w(r#"put k "say \"hi\"""#), ["put", "k", r#"say "hi""#]);
        assert_eq!(w("   "), Vec::<String>::new());
        assert!(split_words("put \"open").is_err());
    }

    #[test]
    fn shell_lines_parse_as_one_shot_commands() {
        let line =
            Line::try_parse_from(["cas", "k", "--expect-sequence", "7", "--new", "v"]).unwrap();
        assert!(matches!(
            line.command,
            Command::Cas {
                expect_sequence: Some(7),
                ..
            }
        ));
        assert!(
            Line::try_parse_from(["help"]).is_err(),
            "help is clap's help text"
        );
    }
}
