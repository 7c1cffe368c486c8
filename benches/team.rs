//! Team mode's cost: paid calls/s and reservation latency through a shared
//! PostgreSQL ledger next to the embedded redb one, at the ledger interface the
//! payment flow uses (reserve with the authorization → settled; two durable
//! commits per paid call). PostgreSQL runs with fsync on, like redb.
//!
//! `bash bench/team.sh` starts a throwaway server and runs this with
//! X402D_BENCH_PG_URL set (env: BENCH_SECS, BENCH_TASKS, BENCH_DAEMONS).

mod support;

use std::sync::Arc;
use support::*;
use tokio::time::Instant;
use x402d::ledger::{Auth, Caps, Ledger, Outcome, Reserve};
use x402d::money::Usd;

const CMD: &str = "bash bench/team.sh";

fn reserve(n: u64) -> Reserve {
    Reserve {
        now_ms: x402d::now_ms(),
        app: "bench".into(),
        model: Some("gpt-4o-mini".into()),
        route: "/v1/chat/completions".into(),
        network: "eip155:84532".into(),
        asset: USDC_BASE_SEPOLIA.into(),
        pay_to: PAY_TO.into(),
        amount: Usd(1000),
        caps: Caps {
            app_per_call: Some(Usd(50_000)),
            app_daily: Some(Usd(1_000_000_000_000)),
            app_monthly: Some(Usd(10_000_000_000_000)),
            app_total: None,
            wallet_daily: Some(Usd(1_000_000_000_000)),
            wallet_monthly: None,
        },
        auth: Some(Auth {
            payer: PAYER.into(),
            nonce: format!("0x{n:064x}"),
            valid_before: 1_900_000_000,
            payment_identifier: None,
        }),
    }
}

/// `tasks` concurrent payers spread over `ledgers` for `secs`: (paid/s, reserve µs sorted).
async fn drive(ledgers: &[Ledger], tasks: usize, secs: f64) -> (f64, Vec<f64>) {
    let t0 = Instant::now();
    let seq = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut hs = Vec::new();
    for i in 0..tasks {
        let l = ledgers[i % ledgers.len()].clone();
        let seq = seq.clone();
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while t0.elapsed().as_secs_f64() < secs {
                let n = seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (us, id) = timed(l.reserve(reserve(n))).await;
                let id = id.unwrap().unwrap();
                lat.push(us);
                l.finish(id, Outcome::Settled { tx: None }, x402d::now_ms())
                    .await
                    .unwrap();
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in hs {
        all.extend(h.await.unwrap());
    }
    let el = t0.elapsed().as_secs_f64();
    (all.len() as f64 / el, sorted(all))
}

fn main() {
    header("team mode: shared PostgreSQL ledger vs embedded redb", CMD);
    let Ok(url) = std::env::var("X402D_BENCH_PG_URL") else {
        println!("skip: X402D_BENCH_PG_URL unset (run `bash bench/team.sh`)");
        return;
    };
    let rt = runtime();
    let secs = secs();
    let tasks = env_num("BENCH_TASKS", 16.0) as usize;
    let daemons = env_num("BENCH_DAEMONS", 3.0) as usize;
    let tz = jiff::tz::TimeZone::UTC;
    rt.block_on(async {
        let dir = TempDir::new("team");
        let (redb, _) = Ledger::open(&dir.0.join("ledger.redb"), tz.clone(), x402d::now_ms()).unwrap();
        let mut pg = Vec::new();
        for i in 0..daemons {
            let sd = dir.0.join(format!("d{i}"));
            let (l, _) = Ledger::open_postgres(&url, &sd, tz.clone(), x402d::now_ms())
                .await
                .unwrap();
            pg.push(l);
        }
        let mut rows = Vec::new();
        for (name, ls, t) in [
            ("redb, 1 daemon, 1 at a time", vec![redb.clone()], 1),
            ("postgres, 1 daemon, 1 at a time", vec![pg[0].clone()], 1),
            (
                "redb, 1 daemon, concurrent",
                vec![redb.clone()],
                tasks,
            ),
            ("postgres, 1 daemon, concurrent", vec![pg[0].clone()], tasks),
            ("postgres, N daemons, concurrent", pg.clone(), tasks),
        ] {
            let (rate, lat) = drive(&ls, t, secs).await;
            let label = name.replace('N', &daemons.to_string());
            println!(
                "{label:<36} tasks {t:>3}: {rate:>7.0} paid calls/s; reserve p50 {:>7.0} µs p99 {:>7.0} µs ({} calls)",
                pct(&lat, 50.0),
                pct(&lat, 99.0),
                lat.len()
            );
            rows.push((label, t, rate, pct(&lat, 50.0), pct(&lat, 99.0)));
        }
        for (label, t, rate, p50, p99) in rows {
            result(
                &format!("{label} (tasks {t})"),
                "-",
                &format!("{rate:.0} paid/s, reserve p50 {p50:.0} µs / p99 {p99:.0} µs"),
                CMD,
            );
        }
    });
}
