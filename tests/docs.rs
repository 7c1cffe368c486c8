//! `x402d man` and `x402d completions SHELL`, generated from the clap definitions: every command
//! the binary's own `--help` lists is in the page and in each completion script.

use std::process::{Command, Output};

fn x402d(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_x402d"))
        .args(args)
        .env_remove("X402D_CONFIG")
        .output()
        .unwrap()
}

fn stdout(args: &[&str]) -> String {
    let out = x402d(args);
    assert!(out.status.success(), "x402d {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands `x402d [PATH] --help` lists (its "Commands:" block), without `help`.
fn commands(path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let help = stdout(&args);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every command path: ["serve"], ["wallet"], ["wallet", "new"], ...
fn all_commands() -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for c in commands(&[]) {
        for s in commands(&[&c]) {
            all.push(vec![c.clone(), s]);
        }
        all.push(vec![c]);
    }
    all
}

#[test]
fn man_page_documents_every_subcommand_and_its_options() {
    let page = stdout(&["man"]);
    assert!(page.contains(".TH x402d 1"), "no title line:\n{page}");
    let all = all_commands();
    assert!(all.len() >= 15, "too few commands found in --help: {all:?}");
    for path in &all {
        let heading = format!(".SS \"x402d {}\"", path.join(" "));
        assert!(page.contains(&heading), "man page lacks {heading}:\n{page}");
    }
    // Options of a subcommand are documented under it.
    let spend = page.split(".SS \"x402d spend\"").nth(1).unwrap();
    let spend = spend.split(".SS ").next().unwrap();
    assert!(spend.contains("days"), "spend options missing:\n{spend}");
    assert!(
        page.contains("/etc/x402d/config.toml"),
        "FILES section missing"
    );
    assert!(page.contains(env!("CARGO_PKG_VERSION")), "version missing");
}

#[test]
fn bash_completion_registers_and_knows_every_subcommand() {
    let script = stdout(&["completions", "bash"]);
    // Sourced by a real bash, the script registers a completion function for x402d.
    let dir = std::env::temp_dir().join(format!("x402d-docs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("x402d.bash");
    std::fs::write(&file, &script).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p x402d && \
             COMP_WORDS=(x402d wal) COMP_CWORD=1 COMP_LINE='x402d wal' COMP_POINT=9 && \
             _x402d x402d wal x402d && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("-F _x402d x402d"), "not registered: {text}");
    assert!(
        text.lines().any(|l| l == "wallet"),
        "`x402d wal<TAB>` does not complete to wallet: {text}"
    );
    for path in all_commands() {
        let last = path.last().unwrap();
        assert!(
            script.contains(last.as_str()),
            "bash completion lacks {last}"
        );
    }
}

#[test]
fn zsh_and_fish_completions_know_every_subcommand() {
    for shell in ["zsh", "fish"] {
        let script = stdout(&["completions", shell]);
        for path in all_commands() {
            let last = path.last().unwrap();
            assert!(
                script.contains(last.as_str()),
                "{shell} completion lacks {last}"
            );
        }
    }
    let zsh = stdout(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef x402d"), "{zsh}");
    let fish = stdout(&["completions", "fish"]);
    assert!(fish.contains("complete -c x402d"), "{fish}");
}

#[test]
fn unknown_shell_is_refused_with_the_choices() {
    let out = x402d(&["completions", "powershell"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bash") && err.contains("zsh") && err.contains("fish"),
        "{err}"
    );
}
