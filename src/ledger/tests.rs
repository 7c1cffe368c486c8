use super::*;
use embedded::PAYMENTS;
use jiff::Timestamp;
use redb::{Database, ReadableDatabase};
use std::sync::Arc;

fn ms(s: &str) -> i64 {
    s.parse::<Timestamp>().unwrap().as_millisecond()
}

fn tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "x402d-ledger-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d.join("ledger.redb")
}

fn rand_suffix() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn req(app: &str, amount: u64, now: i64, caps: Caps) -> Reserve {
    Reserve {
        now_ms: now,
        app: app.into(),
        model: Some("m".into()),
        route: "/v1/chat/completions".into(),
        network: "eip155:84532".into(),
        asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
        pay_to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into(),
        amount: Usd(amount),
        caps,
        auth: None,
    }
}

fn daily(d: u64) -> Caps {
    Caps {
        app_daily: Some(Usd(d)),
        ..Caps::default()
    }
}

#[tokio::test]
async fn cap_at_exactly_the_limit_and_one_unit_over() {
    let (l, _) = Ledger::open(&tmp(), TimeZone::UTC, 0).unwrap();
    let now = ms("2026-11-26T12:00:00Z");
    // 3 × 1000 fits a 3000 cap exactly.
    for _ in 0..3 {
        l.reserve(req("a", 1000, now, daily(3000)))
            .await
            .unwrap()
            .unwrap();
    }
    let e = l
        .reserve(req("a", 1, now, daily(3000)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, "app_daily_cap_exceeded");
    assert!(e.message.contains("$0.003 of the $0.003"), "{}", e.message);
    // Another app is unaffected.
    l.reserve(req("b", 1000, now, daily(3000)))
        .await
        .unwrap()
        .unwrap();
    // Per-call cap: equal passes, one over fails.
    let pc = Caps {
        app_per_call: Some(Usd(500)),
        ..Caps::default()
    };
    l.reserve(req("c", 500, now, pc.clone()))
        .await
        .unwrap()
        .unwrap();
    let e = l
        .reserve(req("c", 501, now, pc))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, "app_per_call_cap_exceeded");
    // Wallet-wide cap counts every app: a+b+c = 3000+1000+500.
    let w = Caps {
        wallet_daily: Some(Usd(4500)),
        ..Caps::default()
    };
    let e = l
        .reserve(req("d", 1, now, w.clone()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code, "wallet_daily_cap_exceeded");
    let w = Caps {
        wallet_daily: Some(Usd(4501)),
        ..Caps::default()
    };
    l.reserve(req("d", 1, now, w)).await.unwrap().unwrap();
}

#[tokio::test]
async fn release_frees_budget_but_rejected_and_at_risk_do_not() {
    let (l, _) = Ledger::open(&tmp(), TimeZone::UTC, 0).unwrap();
    let now = ms("2026-11-26T12:00:00Z");
    let caps = daily(2000);
    let a = l
        .reserve(req("a", 1000, now, caps.clone()))
        .await
        .unwrap()
        .unwrap();
    let b = l
        .reserve(req("a", 1000, now, caps.clone()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        l.reserve(req("a", 1, now, caps.clone()))
            .await
            .unwrap()
            .is_err()
    );
    // Released before signing: budget comes back.
    l.finish(
        a,
        Outcome::Released {
            reason: "no".into(),
        },
        now,
    )
    .await
    .unwrap();
    let c = l
        .reserve(req("a", 1000, now, caps.clone()))
        .await
        .unwrap()
        .unwrap();
    // Signed then rejected / at-risk: still counted.
    l.signed(b, "0xp".into(), "0x01".into(), 100, now)
        .await
        .unwrap();
    l.finish(b, Outcome::Rejected { reason: "r".into() }, now)
        .await
        .unwrap();
    l.signed(c, "0xp".into(), "0x02".into(), 100, now)
        .await
        .unwrap();
    l.finish(
        c,
        Outcome::AtRisk {
            reason: "reset".into(),
        },
        now,
    )
    .await
    .unwrap();
    assert!(
        l.reserve(req("a", 1, now, caps.clone()))
            .await
            .unwrap()
            .is_err()
    );
    // Chain says c settled, b expired unused.
    l.finish(
        c,
        Outcome::Settled {
            tx: Some("0xabc".into()),
        },
        now,
    )
    .await
    .unwrap();
    l.finish(
        b,
        Outcome::Released {
            reason: "expired unused".into(),
        },
        now,
    )
    .await
    .unwrap();
    l.reserve(req("a", 1000, now, caps)).await.unwrap().unwrap();
    // Illegal transitions are refused.
    let e = l
        .finish(c, Outcome::Released { reason: "x".into() }, now)
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::BadTransition { .. }), "{e}");
    let e = l
        .signed(c, "p".into(), "n".into(), 1, now)
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::BadTransition { .. }), "{e}");
}

#[tokio::test]
async fn windows_roll_over_with_an_injected_clock() {
    let tz = TimeZone::get("America/New_York").unwrap();
    let (l, _) = Ledger::open(&tmp(), tz, 0).unwrap();
    let caps = Caps {
        app_daily: Some(Usd(1000)),
        app_monthly: Some(Usd(2500)),
        ..Caps::default()
    };
    // 23:30 local on Nov 29 (04:30Z Nov 30).
    let t1 = ms("2026-11-30T04:30:00Z");
    l.reserve(req("a", 1000, t1, caps.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        l.reserve(req("a", 1000, t1, caps.clone()))
            .await
            .unwrap()
            .unwrap_err()
            .code,
        "app_daily_cap_exceeded"
    );
    // 00:30 local Nov 30: a new day, same month.
    let t2 = ms("2026-11-30T05:30:00Z");
    l.reserve(req("a", 1000, t2, caps.clone()))
        .await
        .unwrap()
        .unwrap();
    // Next day, month cap (2500) now binds: 2000 used + 1000 > 2500.
    let t3 = ms("2026-12-01T04:59:00Z"); // still Nov 30 local
    assert_eq!(
        l.reserve(req("a", 1000, t3, caps.clone()))
            .await
            .unwrap()
            .unwrap_err()
            .code,
        "app_daily_cap_exceeded"
    );
    let t4 = ms("2026-12-01T05:00:00Z"); // Dec 1 local: new month, new day
    l.reserve(req("a", 1000, t4, caps)).await.unwrap().unwrap();
}

#[tokio::test]
async fn spend_survives_restart_and_recovery_fixes_states() {
    let path = tmp();
    let now = ms("2026-11-26T12:00:00Z");
    let caps = daily(3000);
    {
        let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
        let a = l
            .reserve(req("a", 1000, now, caps.clone()))
            .await
            .unwrap()
            .unwrap();
        l.signed(a, "0xp".into(), "0x01".into(), 1, now)
            .await
            .unwrap();
        l.finish(a, Outcome::Settled { tx: None }, now)
            .await
            .unwrap();
        // b: reserved only (crash before signing); c: signed, no outcome.
        l.reserve(req("a", 1000, now, caps.clone()))
            .await
            .unwrap()
            .unwrap();
        let c = l
            .reserve(req("a", 1000, now, caps.clone()))
            .await
            .unwrap()
            .unwrap();
        l.signed(c, "0xp".into(), "0x03".into(), 1, now)
            .await
            .unwrap();
        // Opening again while open is refused (one process per file).
        assert!(matches!(
            Ledger::open(&path, TimeZone::UTC, now),
            Err(LedgerError::Locked(_))
        ));
        drop(l);
        // The writer thread exits when the last handle drops; wait for the file lock.
        for _ in 0..100 {
            if Database::create(&path).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let (l, rec) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    assert_eq!(
        rec,
        Recovery {
            released: 1,
            at_risk: 1
        }
    );
    let ps = l.payments(None, 10).await.unwrap();
    let states: Vec<_> = ps.iter().map(|p| p.state).collect();
    assert_eq!(states, vec![State::AtRisk, State::Released, State::Settled]);
    // Settled + at-risk = 2000 counted: one more 1000 fits, then the cap holds.
    l.reserve(req("a", 1000, now, caps.clone()))
        .await
        .unwrap()
        .unwrap();
    assert!(l.reserve(req("a", 1, now, caps)).await.unwrap().is_err());
    // Ids keep increasing across restarts.
    assert_eq!(l.payments(None, 1).await.unwrap()[0].id, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_overshoot() {
    let (l, _) = Ledger::open(&tmp(), TimeZone::UTC, 0).unwrap();
    let now = ms("2026-11-26T12:00:00Z");
    let caps = daily(37 * 1000);
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let l = l.clone();
        let caps = caps.clone();
        tasks.push(tokio::spawn(async move {
            l.reserve(req("a", 1000, now, caps)).await.unwrap().is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap() as usize;
    }
    assert_eq!(ok, 37);
    assert_eq!(l.payments(None, 1000).await.unwrap().len(), 37);
}

#[test]
fn spend_report_rows() {
    let tz = TimeZone::UTC;
    let now = ms("2026-11-26T12:00:00Z");
    let mk = |id, app: &str, amount, state, t| Payment {
        id,
        created_ms: t,
        updated_ms: t,
        app: app.into(),
        model: None,
        route: "/".into(),
        network: "n".into(),
        asset: "a".into(),
        pay_to: "p".into(),
        amount,
        payer: None,
        nonce: None,
        valid_before: None,
        state,
        tx: None,
        note: None,
        payment_identifier: None,
        attempts: 0,
        last_error: None,
    };
    let ps = vec![
        mk(1, "a", 1000, State::Settled, now),
        mk(2, "a", 500, State::AtRisk, now),
        mk(3, "a", 700, State::Released, now),
        mk(4, "a", 2000, State::Settled, ms("2026-11-01T00:00:00Z")),
        mk(5, "b", 100, State::Settled, now),
    ];
    let mut apps = BTreeMap::new();
    apps.insert(
        "a".to_string(),
        crate::config::AppConfig {
            daily: Some(Usd(10_000)),
            ..Default::default()
        },
    );
    let lim = report::Limits {
        apps: &apps,
        wallet_daily: Some(Usd(5000)),
        wallet_monthly: None,
        tz: &tz,
        now_ms: now,
    };
    let rows = report::spend(&ps, &lim, None, 0);
    let a_today = rows
        .iter()
        .find(|r| r.app == "a" && r.window == "today")
        .unwrap();
    assert_eq!(
        (
            a_today.calls,
            a_today.settled,
            a_today.at_risk,
            a_today.remaining
        ),
        (2, Usd(1000), Usd(500), Some(Usd(8500)))
    );
    let a_month = rows
        .iter()
        .find(|r| r.app == "a" && r.window == "month")
        .unwrap();
    assert_eq!(a_month.settled, Usd(3000));
    let w = rows
        .iter()
        .find(|r| r.app == report::WALLET && r.window == "today")
        .unwrap();
    assert_eq!((w.settled, w.remaining), (Usd(1100), Some(Usd(3400))));
    let only = report::spend(&ps, &lim, Some("b"), 2);
    assert_eq!(only.len(), 5);
    assert_eq!(only[3].window, "2026-11-26");
    assert_eq!(only[4].window, "2026-11-25");
    assert_eq!(report::at_risk_total(&ps), Usd(500));
}

/// Polls a future once (so its op reaches the writer), then drops it.
fn poll_once_then_drop<F: std::future::Future>(f: F) {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(f.as_mut().poll(&mut cx).is_pending());
}

async fn until_no_reserved(l: &Ledger, n: usize) -> Vec<State> {
    for _ in 0..2000 {
        let s: Vec<State> = l.all().await.unwrap().iter().map(|p| p.state).collect();
        if s.len() == n && !s.contains(&State::Reserved) {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("{:?}", l.all().await.unwrap());
}

#[tokio::test]
async fn a_reservation_whose_caller_went_away_is_released() {
    let (l, _) = Ledger::open(&tmp(), TimeZone::UTC, 0).unwrap();
    let now = ms("2026-11-26T12:00:00Z");
    // Dropped before the writer answers: the writer cannot deliver the id and
    // releases the reservation itself.
    poll_once_then_drop(l.reserve(req("a", 1000, now, daily(1000))));
    assert_eq!(until_no_reserved(&l, 1).await, [State::Released]);

    // Dropped after the answer arrived but before it was read: the waiting side
    // releases it on drop.
    {
        let f = l.reserve(req("a", 1000, now, daily(1000)));
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(f.as_mut().poll(&mut cx).is_pending());
        // The record is committed (and answered) before it becomes readable.
        for _ in 0..2000 {
            if l.all().await.unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    assert_eq!(
        until_no_reserved(&l, 2).await,
        [State::Released, State::Released]
    );
    // The whole cap is free again.
    l.reserve(req("a", 1000, now, daily(1000)))
        .await
        .unwrap()
        .unwrap();
}

/// The writer's totals give the same report as a scan of every record, on random
/// histories (every state, several apps, days and months, a non-UTC zone), both
/// as kept up to date op by op and as rebuilt from the file.
#[tokio::test]
async fn totals_match_a_full_scan_on_random_data() {
    let seed = rand_suffix() | 1;
    let mut x = seed;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let tz = TimeZone::fixed(jiff::tz::offset(-5));
    let (l, _) = Ledger::open(&tmp(), tz.clone(), 0).unwrap();
    let base = ms("2026-10-10T00:00:00Z");
    let now = ms("2026-11-26T03:00:00Z");
    let apps_used = ["a", "b", "c"];
    for _ in 0..300 {
        let t = base + rnd(48 * 86_400_000) as i64;
        let app = apps_used[rnd(3) as usize];
        let id = l
            .reserve(req(app, 1 + rnd(5000), t, Caps::default()))
            .await
            .unwrap()
            .unwrap();
        let released = |why: &str| Outcome::Released { reason: why.into() };
        match rnd(6) {
            0 => continue,
            1 => {
                l.finish(id, released("r"), t).await.unwrap();
                continue;
            }
            _ => {}
        }
        l.signed(id, "0xp".into(), format!("0x{id:x}"), 1, t)
            .await
            .unwrap();
        let outcome = match rnd(6) {
            0 => continue,
            1 => Outcome::Settled { tx: None },
            2 => Outcome::Rejected { reason: "r".into() },
            3 => Outcome::AtRisk { reason: "r".into() },
            4 => released("r"),
            _ => {
                l.finish(id, Outcome::AtRisk { reason: "r".into() }, t)
                    .await
                    .unwrap();
                if rnd(2) == 0 {
                    Outcome::Settled { tx: None }
                } else {
                    released("expired")
                }
            }
        };
        l.finish(id, outcome, t).await.unwrap();
    }
    let mut apps = BTreeMap::new();
    for (name, cap) in [("a", 20_000), ("d", 1000)] {
        apps.insert(
            name.to_string(),
            crate::config::AppConfig {
                daily: Some(Usd(cap)),
                monthly: Some(Usd(cap * 10)),
                total: Some(Usd(cap * 30)),
                ..Default::default()
            },
        );
    }
    for round in 0..2 {
        let lim = report::Limits {
            apps: &apps,
            wallet_daily: Some(Usd(50_000)),
            wallet_monthly: Some(Usd(500_000)),
            tz: &tz,
            now_ms: now,
        };
        let all = l.all().await.unwrap();
        for days in [0, 3, 60] {
            let snap = l.totals(now, days).await.unwrap();
            for only in [None, Some("a"), Some("b"), Some("d"), Some("zz")] {
                assert_eq!(
                    report::rows(&snap, &lim, only, days),
                    report::spend(&all, &lim, only, days),
                    "seed {seed}, round {round}, days {days}, app {only:?}"
                );
            }
            assert_eq!(snap.records, all.len() as u64);
            assert_eq!(
                Usd(snap.wallet.total.unsettled),
                report::at_risk_total(&all)
            );
            let mut states: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for p in &all {
                let e = states.entry(p.state.as_str()).or_default();
                *e = (e.0 + 1, e.1 + p.amount);
            }
            assert_eq!(snap.states, states, "seed {seed}");
        }
        assert!(l.verify().await.unwrap().is_ok(), "seed {seed}");
        // A time-zone change rebuilds the index from the file: same answers.
        l.set_timezone(tz.clone()).await.unwrap();
    }
}

/// A figure, not a check: `cargo test --release --lib report_cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn report_cost_scan_vs_totals() {
    let (l, _) = Ledger::open(&tmp(), TimeZone::UTC, 0).unwrap();
    let now = ms("2026-11-26T12:00:00Z");
    let n = 50_000;
    let mut tasks = Vec::new();
    for i in 0..n {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            let app = ["a", "b", "c", "d"][i % 4];
            let t = now - (i as i64 % 90) * 86_400_000;
            l.reserve(req(app, 1000, t, Caps::default()))
                .await
                .unwrap()
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let apps = BTreeMap::new();
    let tz = TimeZone::UTC;
    let lim = report::Limits {
        apps: &apps,
        wallet_daily: None,
        wallet_monthly: None,
        tz: &tz,
        now_ms: now,
    };
    let started = std::time::Instant::now();
    let scan = report::spend(&l.all().await.unwrap(), &lim, None, 0);
    let scan_t = started.elapsed();
    let mut fast_t = std::time::Duration::MAX;
    let mut fast = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        fast = report::rows(&l.totals(now, 0).await.unwrap(), &lim, None, 0);
        fast_t = fast_t.min(started.elapsed());
    }
    assert_eq!(scan, fast);
    println!("{n} records: full scan {scan_t:?}, writer totals {fast_t:?} (best of 5)");
}

#[tokio::test]
async fn attempts_and_payment_identifier_persist_and_old_records_still_read() {
    let path = tmp();
    let now = ms("2026-11-26T12:00:00Z");
    // A record as written before these fields existed.
    {
        let db = Database::create(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        {
            let mut t = wtx.open_table(PAYMENTS).unwrap();
            let old = r#"{"id":1,"created_ms":1764158400000,"updated_ms":1764158400000,"app":"a","model":null,"route":"/v1/chat/completions","network":"eip155:84532","asset":"x","pay_to":"y","amount":1000,"payer":"0xp","nonce":"0x01","valid_before":1,"state":"settled","tx":null,"note":null}"#;
            t.insert(1u64, old.as_bytes()).unwrap();
        }
        wtx.commit().unwrap();
    }
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    let old = &l.payments(None, 1).await.unwrap()[0];
    assert_eq!(
        (old.attempts, &old.payment_identifier, &old.last_error),
        (0, &None, &None)
    );
    let id = l
        .reserve(req("a", 1000, now, Caps::default()))
        .await
        .unwrap()
        .unwrap();
    // Re-sends are recorded only for a signed payment.
    assert!(matches!(
        l.attempt(id, 1, None, now).await,
        Err(LedgerError::BadTransition { .. })
    ));
    l.signed_with_identifier(
        id,
        "0xp".into(),
        "0x02".into(),
        1,
        Some("x402d_0123456789abcdef".into()),
        now,
    )
    .await
    .unwrap();
    l.attempt(id, 1, Some("connection reset".into()), now)
        .await
        .unwrap();
    l.attempt(id, 2, None, now).await.unwrap();
    l.finish(id, Outcome::Settled { tx: None }, now)
        .await
        .unwrap();
    assert!(
        l.attempt(id, 3, None, now).await.is_err(),
        "not after the end"
    );
    let p = &l.payments(None, 1).await.unwrap()[0];
    assert_eq!(
        p.payment_identifier.as_deref(),
        Some("x402d_0123456789abcdef")
    );
    assert_eq!(p.attempts, 2);
    assert_eq!(p.last_error.as_deref(), Some("connection reset"));
    assert_eq!(p.state, State::Settled);
}

/// A reservation made with its authorization's parameters is created signed-for
/// in one commit: it carries them, and a crash before its outcome leaves it at
/// risk (resolved on chain), never released.
#[tokio::test]
async fn a_reservation_with_its_authorization_is_signed_in_one_commit() {
    let path = tmp();
    let now = ms("2026-11-26T12:00:00Z");
    {
        let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
        let commits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = commits.clone();
        l.observe_commits(Box::new(move |_| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        let mut r = req("a", 1000, now, daily(3000));
        r.auth = Some(Auth {
            payer: "0xp".into(),
            nonce: "0x07".into(),
            valid_before: 99,
            payment_identifier: Some("pay_1".into()),
        });
        let id = l.reserve(r).await.unwrap().unwrap();
        // The observer runs just after the writer answers: wait for it (bounded).
        for _ in 0..200 {
            if commits.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(commits.load(std::sync::atomic::Ordering::SeqCst), 1);
        let p = &l.payments(None, 1).await.unwrap()[0];
        assert_eq!(p.id, id);
        assert_eq!(p.state, State::Signed);
        assert_eq!(p.nonce.as_deref(), Some("0x07"));
        assert_eq!(p.valid_before, Some(99));
        assert_eq!(p.payer.as_deref(), Some("0xp"));
        assert_eq!(p.payment_identifier.as_deref(), Some("pay_1"));
        drop(l);
        for _ in 0..100 {
            if Database::create(&path).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let (l, rec) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    assert_eq!(
        rec,
        Recovery {
            released: 0,
            at_risk: 1
        }
    );
    assert_eq!(l.all().await.unwrap()[0].state, State::AtRisk);
}

/// Drops the ledger and waits until its file can be opened again.
fn close(l: Ledger, path: &Path) {
    drop(l);
    for _ in 0..200 {
        if let Ok(db) = Database::create(path) {
            drop(db);
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the ledger file stayed locked");
}

/// A history in every state, several apps and days; returns how many records
/// are left without a final outcome.
async fn history(l: &Ledger, n: u64, now: i64) -> u64 {
    let mut open = 0;
    for i in 0..n {
        let app = ["a", "b", "c"][(i % 3) as usize];
        let t = now - (i as i64 % 40) * 86_400_000;
        let id = l
            .reserve(req(app, 100 + i, t, Caps::default()))
            .await
            .unwrap()
            .unwrap();
        l.signed(id, "0xp".into(), format!("0x{id:x}"), 1, t)
            .await
            .unwrap();
        let outcome = match i % 5 {
            0 | 1 => Outcome::Settled { tx: None },
            2 => Outcome::Released { reason: "r".into() },
            3 => {
                open += 1;
                Outcome::AtRisk { reason: "r".into() }
            }
            _ => {
                open += 1;
                Outcome::Rejected { reason: "r".into() }
            }
        };
        l.finish(id, outcome, t).await.unwrap();
    }
    open
}

fn no_caps_limits<'a>(
    apps: &'a BTreeMap<String, crate::config::AppConfig>,
    tz: &'a TimeZone,
    now: i64,
) -> report::Limits<'a> {
    report::Limits {
        apps,
        wallet_daily: None,
        wallet_monthly: None,
        tz,
        now_ms: now,
    }
}

/// Start-up reads the persisted totals and the open records, never the history:
/// counted in records decoded, not in time.
#[tokio::test]
async fn startup_decodes_only_the_open_records() {
    let path = tmp();
    let now = ms("2026-11-26T12:00:00Z");
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    let open = history(&l, 200, now).await;
    let before = l.totals(now, 45).await.unwrap();
    close(l, &path);
    let (l, rec) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    assert_eq!(rec, Recovery::default());
    assert_eq!(l.stats().records_decoded, open, "only the open records");
    assert_eq!(l.totals(now, 45).await.unwrap(), before);
    assert_eq!(l.unresolved().await.unwrap().len() as u64, open);
    // The same numbers as a scan of every record.
    let apps = BTreeMap::new();
    let tz = TimeZone::UTC;
    let lim = no_caps_limits(&apps, &tz, now);
    assert_eq!(
        report::rows(&before, &lim, None, 45),
        report::spend(&l.all().await.unwrap(), &lim, None, 45)
    );
    assert!(l.verify().await.unwrap().is_ok());
}

/// `payments --limit N` decodes N records, whatever the history's length.
#[tokio::test]
async fn the_last_payments_read_only_as_many_records() {
    let path = tmp();
    let now = ms("2026-11-26T12:00:00Z");
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    history(&l, 60, now).await;
    let before = l.stats().records_decoded;
    let ps = l.payments(None, 5).await.unwrap();
    assert_eq!(
        ps.iter().map(|p| p.id).collect::<Vec<_>>(),
        [60, 59, 58, 57, 56]
    );
    assert_eq!(l.stats().records_decoded - before, 5);
}

/// A file written before the index existed (records and `meta` only) is rebuilt
/// from its records once, then starts from the persisted index.
#[tokio::test]
async fn an_old_file_is_rebuilt_once_then_read_from_its_index() {
    let path = tmp();
    let now = ms("2026-11-26T12:00:00Z");
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    let open = history(&l, 90, now).await;
    let want = l.totals(now, 10).await.unwrap();
    close(l, &path);
    // Back to the old format: no index table.
    {
        let db = Database::create(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        wtx.delete_table(embedded::INDEX).unwrap();
        wtx.commit().unwrap();
    }
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    assert_eq!(l.stats().records_decoded, 90, "rebuilt from every record");
    assert_eq!(l.totals(now, 10).await.unwrap(), want);
    // Ids continue after the old ones.
    let id = l
        .reserve(req("a", 1, now, Caps::default()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, 91);
    close(l, &path);
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    assert_eq!(l.stats().records_decoded, open + 1, "then from the index");
    assert!(l.verify().await.unwrap().is_ok());
}

/// Windows are kept in one zone: opened in another, the index is rebuilt once
/// (days re-keyed), then read as persisted.
#[tokio::test]
async fn a_time_zone_change_rebuilds_the_index_once() {
    let path = tmp();
    let now = ms("2026-11-26T03:00:00Z");
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    let open = history(&l, 50, now).await;
    close(l, &path);
    let ny = TimeZone::get("America/New_York").unwrap();
    let (l, _) = Ledger::open(&path, ny.clone(), now).unwrap();
    assert_eq!(l.stats().records_decoded, 50);
    let snap = l.totals(now, 40).await.unwrap();
    let apps = BTreeMap::new();
    let lim = no_caps_limits(&apps, &ny, now);
    assert_eq!(
        report::rows(&snap, &lim, None, 40),
        report::spend(&l.all().await.unwrap(), &lim, None, 40)
    );
    close(l, &path);
    let (l, _) = Ledger::open(&path, ny.clone(), now).unwrap();
    assert_eq!(l.stats().records_decoded, open);
    assert_eq!(l.totals(now, 40).await.unwrap(), snap);
}

/// `verify` finds a stored total that does not match the records, and a
/// rebuild from the records fixes it.
#[tokio::test]
async fn verify_reports_a_total_that_differs_from_the_records() {
    let path = tmp();
    let now = ms("2026-11-26T12:00:00Z");
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    history(&l, 20, now).await;
    assert_eq!(l.verify().await.unwrap().differences, Vec::<String>::new());
    close(l, &path);
    // Tamper with app "a"'s lifetime total.
    {
        let db = Database::create(&path).unwrap();
        let wtx = db.begin_write().unwrap();
        {
            let mut t = wtx.open_table(embedded::INDEX).unwrap();
            let v: Vec<u8> = [1u64, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
            t.insert(b"ta".as_slice(), v.as_slice()).unwrap();
        }
        wtx.commit().unwrap();
    }
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    let v = l.verify().await.unwrap();
    assert_eq!(v.records, 20);
    assert_eq!(v.differences.len(), 1, "{:?}", v.differences);
    assert!(
        v.differences[0].starts_with("app \"a\" in total: stored 1 calls, 2 settled, 3 unsettled"),
        "{:?}",
        v.differences
    );
    close(l, &path);
    let db = open_offline(&path).unwrap();
    assert!(rebuild_offline(&db, &TimeZone::UTC).unwrap().is_ok());
}

/// Outcomes nobody waits for commit without an fsync; the next reservation's
/// durable commit carries them, and reads see them at once.
#[tokio::test]
async fn detached_outcomes_commit_without_an_fsync() {
    let path = tmp();
    let now = ms("2026-11-26T12:00:00Z");
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    let mut r = req("a", 1000, now, daily(1000));
    r.auth = Some(Auth {
        payer: "0xp".into(),
        nonce: "0x01".into(),
        valid_before: 9,
        payment_identifier: None,
    });
    let s0 = l.stats();
    let id = l.reserve(r).await.unwrap().unwrap();
    l.finish_detached(
        id,
        Outcome::Released {
            reason: "not sent".into(),
        },
        now,
    );
    // Read after the detached op: its effect is visible (and the budget free).
    assert_eq!(l.payments(None, 1).await.unwrap()[0].state, State::Released);
    l.reserve(req("a", 1000, now, daily(1000)))
        .await
        .unwrap()
        .unwrap();
    let s1 = l.stats();
    assert_eq!(s1.durable_commits - s0.durable_commits, 2);
    assert_eq!(s1.non_durable_commits - s0.non_durable_commits, 1);
    l.flush().await.unwrap();
    assert!(l.verify().await.unwrap().is_ok());
}

/// An outcome committed without an fsync is flushed once the writer goes idle,
/// even when the only ops after it changed nothing (a refused reservation).
#[tokio::test]
async fn an_idle_writer_flushes_detached_outcomes() {
    let path = tmp();
    let now = ms("2026-11-26T12:00:00Z");
    let (l, _) = Ledger::open(&path, TimeZone::UTC, now).unwrap();
    let id = l
        .reserve(req("a", 1000, now, daily(1000)))
        .await
        .unwrap()
        .unwrap();
    l.finish_detached(
        id,
        Outcome::Released {
            reason: "not sent".into(),
        },
        now,
    );
    l.reserve(req("a", 5000, now, daily(1000)))
        .await
        .unwrap()
        .unwrap_err();
    let s = l.stats();
    assert_eq!((s.durable_commits, s.non_durable_commits), (1, 1));
    for _ in 0..2000 {
        if l.stats().flushes == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("never flushed: {:?}", l.stats());
}

/// What the idle flush relies on: redb's empty durable commit carries the
/// commits made before it without an fsync (a copy of the file taken right
/// after it, as a crash would leave it, has them).
#[tokio::test]
async fn an_empty_durable_commit_carries_earlier_lazy_ones() {
    let path = tmp();
    let db = Database::create(&path).unwrap();
    {
        let mut wtx = db.begin_write().unwrap();
        {
            let mut t = wtx.open_table(PAYMENTS).unwrap();
            t.insert(1u64, b"x".as_slice()).unwrap();
        }
        wtx.set_durability(redb::Durability::None).unwrap();
        wtx.commit().unwrap();
    }
    {
        let wtx = db.begin_write().unwrap();
        wtx.commit().unwrap();
    }
    // Simulate a crash: copy the file as it is on disk right now.
    let copy = path.with_extension("copy.redb");
    std::fs::copy(&path, &copy).unwrap();
    drop(db);
    let db = Database::open(&copy).unwrap();
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(PAYMENTS).unwrap();
    assert!(t.get(1u64).unwrap().is_some(), "non-durable commit lost");
}

/// A steady stream of reads (status, metrics, the dashboard) never postpones
/// the flush of an outcome: it is due a fixed time after that outcome's
/// commit, not after the writer's last op.
#[tokio::test]
async fn steady_reads_do_not_postpone_the_flush() {
    let now = ms("2026-11-26T12:00:00Z");
    let (l, _) = Ledger::open(&tmp(), TimeZone::UTC, now).unwrap();
    let id = l
        .reserve(req("a", 1000, now, daily(1000)))
        .await
        .unwrap()
        .unwrap();
    l.finish_detached(
        id,
        Outcome::Released {
            reason: "not sent".into(),
        },
        now,
    );
    // Reads every 50 ms, far more often than the idle delay (500 ms).
    for _ in 0..200 {
        l.totals(now, 0).await.unwrap();
        if l.stats().flushes == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("reads kept postponing the flush: {:?}", l.stats());
}
