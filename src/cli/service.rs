//! `install-service`: writes the systemd units for this binary.

use super::{Fail, InstallArgs};
use std::path::PathBuf;
use std::process::ExitCode;

const USER_UNIT: &str = include_str!("../../systemd/x402d.service");
const SYSTEM_UNIT: &str = include_str!("../../systemd/x402d-system.service");
const SOCKET_UNIT: &str = include_str!("../../systemd/x402d.socket");

/// A path as a unit-file word: `%` escaped, quoted when it has spaces.
fn unit_path(p: &str) -> String {
    let p = p.replace('%', "%%");
    if p.contains(char::is_whitespace) || p.contains('"') {
        format!("\"{}\"", p.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        p
    }
}

pub(crate) async fn install_service(a: &InstallArgs) -> Result<ExitCode, Fail> {
    let exe = std::env::current_exe()
        .map_err(|e| Fail(1, format!("cannot find this binary's path: {e}")))?;
    let exe = exe.display().to_string();
    if a.system && (exe.starts_with("/home/") || exe.starts_with("/root/")) {
        return Err(Fail(
            2,
            format!(
                "{exe} is under /home or /root, which the system unit's sandbox hides (ProtectHome=yes); \
                 install the binary first: `sudo install -m 0755 {exe} /usr/local/bin/x402d`, then run \
                 `sudo /usr/local/bin/x402d install-service --system`"
            ),
        ));
    }
    let (template, path, scope) = if a.system {
        (
            SYSTEM_UNIT,
            PathBuf::from("/etc/systemd/system/x402d.service"),
            "",
        )
    } else {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or_else(|| Fail(1, "neither XDG_CONFIG_HOME nor HOME is set".into()))?;
        (
            USER_UNIT,
            base.join("systemd/user/x402d.service"),
            "--user ",
        )
    };
    let unit = template.replace("/usr/local/bin/x402d", &unit_path(&exe));
    let socket_path = path.with_file_name("x402d.socket");
    let what = if a.socket { "x402d.socket" } else { "x402d" };
    if a.dry_run {
        outln!("# would write {}", path.display());
        out!("{unit}");
        if a.socket {
            outln!("# would write {}", socket_path.display());
            out!("{SOCKET_UNIT}");
        }
        outln!("# then: systemctl {scope}daemon-reload && systemctl {scope}enable --now {what}");
        return Ok(ExitCode::SUCCESS);
    }
    if a.socket {
        if let Some(dir) = socket_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Fail(1, format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(&socket_path, SOCKET_UNIT)
            .map_err(|e| Fail(1, format!("cannot write {}: {e}", socket_path.display())))?;
        outln!("wrote {}", socket_path.display());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Fail(1, format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(&path, &unit).map_err(|e| {
        Fail(
            1,
            format!(
                "cannot write {}: {e}{}",
                path.display(),
                if a.system { " (run as root)" } else { "" }
            ),
        )
    })?;
    outln!("wrote {}", path.display());
    // The Debian package ships the units in the vendor directory; a copy in /etc or ~/.config
    // shadows it, also after package upgrades that change it.
    let vendor: &[&str] = if a.system {
        &[
            "/lib/systemd/system/x402d.service",
            "/usr/lib/systemd/system/x402d.service",
        ]
    } else {
        &["/usr/lib/systemd/user/x402d.service"]
    };
    if let Some(v) = vendor.iter().find(|v| std::path::Path::new(v).exists()) {
        eprintln!(
            "note: {v} (from the x402d package) is now overridden by {}, also after package \
             upgrades; to follow the package instead: rm {} && systemctl {scope}daemon-reload",
            path.display(),
            path.display()
        );
    }
    let mut cmd = tokio::process::Command::new("systemctl");
    if !a.system {
        cmd.arg("--user");
    }
    match cmd.arg("daemon-reload").status().await {
        Ok(s) if s.success() => outln!("systemd reloaded"),
        Ok(s) => {
            eprintln!("warning: `systemctl {scope}daemon-reload` exited with {s}; run it yourself")
        }
        Err(e) => eprintln!(
            "warning: cannot run systemctl ({e}); run `systemctl {scope}daemon-reload` yourself"
        ),
    }
    if a.system {
        outln!(
            "next: put the key in the credential (see the README), then: systemctl enable --now x402d"
        );
    } else {
        outln!(
            "next: systemctl --user enable --now x402d   (and `loginctl enable-linger $USER` to run without a login)"
        );
    }
    Ok(ExitCode::SUCCESS)
}
