//! The daemon's lifecycle through the real binary: the one shutdown sequence
//! (payment flows drained, the bound admin socket removed), socket activation
//! under the loopback rule, app-side timeouts, and what `status` reports.

mod common;
use common::*;
use std::time::Duration;

const SEPOLIA: &str = "[payment]\nnetworks = [\"eip155:84532\"]\n";

fn signal(d: &Daemon, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &d.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// A paid call whose app hung up mid-call still settles when the daemon is
/// stopped: stop waits for the payment flow, records its outcome, then exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_drains_a_paid_flow_whose_client_hung_up() {
    let seller = Seller::start(SellerCfg {
        paid_delay_ms: 2000,
        ..Default::default()
    })
    .await;
    let mut d = Daemon::start(&seller.url(), SEPOLIA);
    let url = d.url("/v1/chat/completions");
    let call = tokio::spawn(async move { request("POST", &url, &[], CHAT).await });
    // The seller holds a verified payment; the app gives up and closes its connection.
    assert!(wait_until(Duration::from_secs(10), || seller
        .counts()
        .verified
        == 1));
    call.abort();
    let _ = call.await;
    signal(&d, "TERM");
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", d.log());
    let ps = d.payments();
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["state"], "settled", "{ps:?}\n{}", d.log());
}
