//! The private key never leaves the keyring: after a burst of paid and failing
//! calls at RUST_LOG=trace, no log line, state file, config, response, or CLI
//! output contains it, in any case, with or without 0x, or even a fragment of it.

mod common;
use base64::Engine as _;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const SEPOLIA: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n";

/// Everything a user, an app, or an attacker reading files could see.
#[derive(Default)]
struct Seen(Vec<(String, Vec<u8>)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((what.into(), bytes.into()));
    }

    fn reply(&mut self, what: &str, r: &Reply) {
        let mut b = format!("HTTP {}\n", r.status).into_bytes();
        for (k, v) in &r.headers {
            b.extend_from_slice(k.as_str().as_bytes());
            b.extend_from_slice(b": ");
            b.extend_from_slice(v.as_bytes());
            b.push(b'\n');
        }
        b.extend_from_slice(&r.body);
        self.add(what, b);
    }

    fn output(&mut self, what: &str, o: &std::process::Output) {
        self.add(format!("{what} (stdout)"), o.stdout.clone());
        self.add(format!("{what} (stderr)"), o.stderr.clone());
    }

    fn files(&mut self, dir: &Path) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let ft = std::fs::symlink_metadata(&p).unwrap().file_type();
            if ft.is_dir() {
                self.files(&p);
            } else if ft.is_file() {
                self.add(p.display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
}

/// What to look for: the key's hex (any case, so with or without 0x too), every
/// 16-hex-digit window of it (a truncated print), its raw bytes, and its base64.
fn needles() -> Vec<(String, Vec<u8>)> {
    let hex = PAYER_KEY.trim_start_matches("0x").to_ascii_lowercase();
    let raw = hex::decode(&hex).unwrap();
    let mut n = vec![
        ("hex".to_string(), hex.as_bytes().to_vec()),
        ("raw bytes".to_string(), raw.clone()),
        (
            "base64".to_string(),
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(&raw)
                .into_bytes(),
        ),
    ];
    for i in 0..=hex.len() - 16 {
        n.push((
            format!("hex[{i}..{}]", i + 16),
            hex.as_bytes()[i..i + 16].to_vec(),
        ));
    }
    n
}

fn find(hay: &[u8], needle: &[u8], fold_case: bool) -> Option<usize> {
    if fold_case {
        let hay = hay.to_ascii_lowercase();
        hay.windows(needle.len()).position(|w| w == needle)
    } else {
        hay.windows(needle.len()).position(|w| w == needle)
    }
}

/// Every (place, form) where the key shows up.
fn leaks(seen: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    for (what, hay) in &seen.0 {
        for (form, needle) in needles() {
            // Hex is matched case-insensitively; bytes and base64 exactly.
            let fold = form.starts_with("hex");
            if let Some(at) = find(hay, &needle, fold) {
                out.push(format!("{what}: {form} at byte {at}"));
            }
        }
    }
    out
}

#[test]
fn the_search_finds_every_form() {
    let hex = &PAYER_KEY[2..];
    let raw = hex::decode(hex).unwrap();
    for hay in [
        format!("key={PAYER_KEY} end").into_bytes(),
        format!("KEY=0X{}", hex.to_uppercase()).into_bytes(),
        format!("k {hex}").into_bytes(),
        format!("truncated {}…", &hex[20..40]).into_bytes(),
        [b"bin\0".as_slice(), &raw, b"\0"].concat(),
        base64::engine::general_purpose::STANDARD
            .encode(&raw)
            .into_bytes(),
    ] {
        let mut s = Seen::default();
        s.add("probe", hay.clone());
        assert!(!leaks(&s).is_empty(), "{}", String::from_utf8_lossy(&hay));
    }
    let mut s = Seen::default();
    s.add("clean", format!("address {PAYER}").into_bytes());
    assert!(leaks(&s).is_empty());
}

fn sigterm(d: &mut Daemon) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(d.child.id().to_string())
        .status();
    assert!(
        wait_until(Duration::from_secs(15), || matches!(
            d.child.try_wait(),
            Ok(Some(_))
        )),
        "x402d did not stop on SIGTERM"
    );
}

#[tokio::test]
async fn the_private_key_appears_nowhere() {
    let seller = Seller::start(SellerCfg::default()).await;
    let mut d = Daemon::start_env(
        &seller.url(),
        SEPOLIA,
        &[("RUST_LOG", "trace"), ("RUST_BACKTRACE", "full")],
    );
    let mut seen = Seen::default();
    let pid = d.child.id();
    seen.add(
        "daemon argv",
        std::fs::read(format!("/proc/{pid}/cmdline")).unwrap(),
    );
    seen.add(
        "daemon environment",
        std::fs::read(format!("/proc/{pid}/environ")).unwrap(),
    );

    // A burst of paid calls...
    for i in 0..20 {
        let r = chat(&d, "sk-burst").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        seen.reply(&format!("paid call {i}"), &r);
    }
    // ...and failing ones, on every path that builds an error or logs a reason.
    type Failing = (&'static str, fn(&mut SellerCfg), u16);
    let failing: Vec<Failing> = vec![
        ("rejected", |c| c.after_pay = AfterPay::Reject, 402),
        (
            "seller 500 after payment",
            |c| c.after_pay = AfterPay::Fail500,
            500,
        ),
        (
            "dropped after payment",
            |c| c.after_pay = AfterPay::Drop,
            502,
        ),
        ("bad 402", |c| c.raw_header = Some("%%%".into()), 502),
        ("over the ceiling", |c| c.amount = "600000".into(), 402),
        ("unpaid 500", |c| c.unpaid_status = 500, 500),
    ];
    for (name, setup, status) in failing {
        seller.set(|c| {
            *c = SellerCfg::default();
            setup(c);
        });
        let r = chat(&d, "sk-burst").await;
        assert_eq!(
            r.status,
            status,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        seen.reply(name, &r);
    }
    seller.set(|c| *c = SellerCfg::default());
    let r = request("GET", &d.url("/v1/models"), &[], "").await;
    seen.reply("models", &r);
    let r = request("GET", &d.url("/nope"), &[], "").await;
    seen.reply("404", &r);
    let c = seller.counts();
    assert_eq!(c.verified, 22, "{:?}", c.invalid);

    // The CLI against the running daemon (admin socket), at trace level too.
    for args in [
        &["payments", "--json", "--limit", "1000"][..],
        &["spend", "--json"],
        &["status", "--json"],
        &["status"],
        &["payments"],
        &["wallet", "address"],
        &["config", "check"],
    ] {
        let o = d.cli(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        seen.output(&format!("x402d {} (running)", args.join(" ")), &o);
    }
    let payments: serde_json::Value =
        serde_json::from_slice(&d.cli(&["payments", "--json", "--limit", "1000"]).stdout).unwrap();
    assert_eq!(payments.as_array().unwrap().len(), 23, "{payments}");

    // Stop it, then the offline paths (ledger read directly) and every file.
    sigterm(&mut d);
    for args in [
        &["payments", "--json", "--limit", "1000"][..],
        &["spend", "--json"],
        &["status", "--json"],
    ] {
        let o = d.cli(args);
        seen.output(&format!("x402d {} (stopped)", args.join(" ")), &o);
    }
    std::thread::sleep(Duration::from_millis(200));
    let log = d.log();
    assert!(log.contains("TRACE"), "trace logging is on");
    assert!(log.contains(PAYER), "the address is logged, as it may be");
    seen.add("daemon log", log.clone().into_bytes());
    seen.add("wallet import output", d.import_log.clone().into_bytes());
    seen.add("config", std::fs::read(&d.config).unwrap());
    seen.files(&d.state_dir());
    let ledger = std::fs::read(d.state_dir().join("ledger.redb")).unwrap();
    assert!(ledger.len() > 4096, "the ledger was written");
    // The data searched really holds the payer's records (positive control).
    let all: Vec<u8> = seen.0.iter().flat_map(|(_, b)| b.clone()).collect();
    assert!(find(&all, PAYER[2..].to_ascii_lowercase().as_bytes(), true).is_some());

    let found = leaks(&seen);
    eprintln!(
        "searched {} places, {} bytes ({} log bytes) for {} key forms",
        seen.0.len(),
        all.len(),
        log.len(),
        needles().len()
    );
    assert!(
        found.is_empty(),
        "the private key leaked:\n{}",
        found.join("\n")
    );
}
