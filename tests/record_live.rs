//! Root only: records fresh traffic with the same script that made the
//! committed captures (`cargo xtask record-captures`) and replays it. Proves
//! the recording still works on this machine and that the report does not
//! depend on the accidents of one recording (ports, ids, timing).

mod common;
use common::*;

#[test]
fn freshly_recorded_traffic_gives_the_planned_report() {
    if !root_tests_enabled(&["ip", "dnsmasq", "dig", "curl", "tcpdump", "editcap"]) {
        return;
    }
    let out_dir = std::env::temp_dir().join(format!("connbal-record-{}", std::process::id()));
    xtask::record::record(&out_dir).expect("recording in namespaces");
    for capture in [
        "veth.pcap",
        "veth-nano.pcap",
        "veth.pcapng",
        "veth.snoop",
        "any-sll.pcap",
        "any-sll2.pcap",
    ] {
        let out = replay(&[out_dir.join(capture).to_str().unwrap()]);
        assert!(out.status.success(), "{capture}: {}", stderr(&out));
        assert_eq!(stdout(&out), expected_default(), "{capture}");
    }
    let out = replay(&[
        "--format",
        "json",
        out_dir.join("failover.pcap").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    check_failover_report(&json, false);
    let _ = std::fs::remove_dir_all(&out_dir);
}
