//! `completions SHELL` and `man`: generated from the clap definitions, so they never drift.

use super::{Cli, Fail};
use clap::CommandFactory;
use clap_complete::Shell;
use std::process::ExitCode;

/// The shells `x402d completions` writes for.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

pub(crate) fn completions(shell: CompletionShell) -> Result<ExitCode, Fail> {
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "x402d", &mut buf);
    write_stdout(&buf)
}

/// One page, x402d(1): the command, its options, then every subcommand with its own options.
pub(crate) fn man() -> Result<ExitCode, Fail> {
    let cmd = Cli::command().disable_help_subcommand(true);
    let mut buf = Vec::new();
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(&mut buf)?;
    page.render_name_section(&mut buf)?;
    page.render_synopsis_section(&mut buf)?;
    buf.extend_from_slice(DESCRIPTION.as_bytes());
    page.render_options_section(&mut buf)?;
    roff_line(&mut buf, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands() {
        section(&mut buf, &["x402d"], sub)?;
    }
    buf.extend_from_slice(TAIL.as_bytes());
    page.render_version_section(&mut buf)?;
    write_stdout(&buf)
}

const DESCRIPTION: &str = r#".SH DESCRIPTION
\fBx402d\fR is a local proxy for OpenAI-compatible tools. Point a tool's base URL at
http://127.0.0.1:8402/v1: x402d forwards each call to the upstream and, when the upstream answers
HTTP 402 Payment Required (the x402 protocol), pays it in USDC from its wallet, within the spend
caps of the config, and retries the call. Every payment is recorded in a ledger before it is signed.
.PP
Replies carry \fBx-x402d-cost\fR and \fBx-x402d-payment-state\fR headers.
"#;

const TAIL: &str = r#".SH FILES
.TP
$XDG_CONFIG_HOME/x402d/config.toml
The config of a user's x402d (\fB--config\fR or $X402D_CONFIG name another).
.TP
/etc/x402d/config.toml
The config of the system service, x402d.service.
.TP
$XDG_STATE_HOME/x402d (~/.local/state/x402d), /var/lib/x402d
State: the payment ledger and the admin socket (user, system service).
.SH SEE ALSO
\fBsystemctl\fR(1), \fBsystemd-creds\fR(1), \fBkeyctl\fR(1)
"#;

/// A `.SS` subsection for one subcommand (then its own subcommands): usage, about, options.
fn section(buf: &mut Vec<u8>, parents: &[&str], cmd: &clap::Command) -> std::io::Result<()> {
    let mut path: Vec<&str> = parents.to_vec();
    path.push(cmd.get_name());
    let name = path.join(" ");
    let sub = cmd
        .clone()
        .bin_name(&name)
        .disable_help_flag(true)
        .disable_help_subcommand(true);
    roff_line(buf, &format!(".SS \"{name}\""))?;
    let page = clap_mangen::Man::new(sub.clone());
    // The synopsis and options renderers write their own `.SH`; drop those headers so the
    // subcommand stays one subsection.
    let mut part = Vec::new();
    page.render_synopsis_section(&mut part)?;
    if let Some(about) = sub.get_long_about().or(sub.get_about()) {
        roff_line(&mut part, ".PP")?;
        roff_line(&mut part, &roff_text(&about.to_string()))?;
    }
    if sub
        .get_arguments()
        .any(|a| !a.is_hide_set() && !a.is_global_set())
    {
        page.render_options_section(&mut part)?;
    }
    for line in String::from_utf8_lossy(&part).lines() {
        if !line.starts_with(".SH ") {
            roff_line(buf, line)?;
        }
    }
    for s in cmd.get_subcommands() {
        section(buf, &path, s)?;
    }
    Ok(())
}

/// Plain text as roff text lines: backslashes escaped, a leading `.` or `'` (a request) guarded.
fn roff_text(s: &str) -> String {
    s.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn roff_line(buf: &mut Vec<u8>, line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(buf, "{line}")
}

fn write_stdout(buf: &[u8]) -> Result<ExitCode, Fail> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(buf).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(Fail(1, format!("cannot write to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::roff_text;

    #[test]
    fn roff_text_escapes_requests_and_backslashes() {
        assert_eq!(roff_text("plain"), "plain");
        assert_eq!(roff_text(".SH not a header"), "\\&.SH not a header");
        assert_eq!(roff_text("'quoted"), "\\&'quoted");
        assert_eq!(roff_text("a\\b"), "a\\eb");
        assert_eq!(roff_text("one\n.two"), "one\n\\&.two");
    }
}
