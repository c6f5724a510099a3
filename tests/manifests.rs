//! The Kubernetes contract (deploy/kubernetes/connbal.yaml): what the
//! DaemonSet asks of a node is what host mode needs and no more, its
//! arguments are ones connbal takes, and its probes and monitors point at
//! what connbal serves. The image test in runtimes_live runs the same
//! arguments in a real container.
//!
//! Each object of a built-in kind is also validated offline against the
//! Kubernetes API's schema, through the official Python client's models
//! (tests/k8s_schema.py): no API server or schema download is reachable
//! from these machines. The Prometheus operator's PodMonitor and
//! ServiceMonitor have no model there; the contract test below checks
//! the fields of theirs that connbal depends on.

mod common;
use common::*;

fn container() -> serde_json::Value {
    let daemonset = manifest("DaemonSet");
    let containers = daemonset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .clone();
    assert_eq!(containers.len(), 1, "{containers:?}");
    containers[0].clone()
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn the_daemonset_asks_for_three_capabilities_and_the_cgroup_tree_only() {
    let daemonset = manifest("DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = container();
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false, "{security}");
    assert_eq!(security["allowPrivilegeEscalation"], false, "{security}");
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        strings(&security["capabilities"]["add"]),
        ["BPF", "PERFMON", "NET_ADMIN"]
    );
    // No host namespace but what host mode needs: it attaches by cgroup,
    // so neither the host's network nor its processes.
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod[field].is_null() || pod[field] == false, "{field}");
    }
    // Every volume is a read-only host path, the cgroup2 tree among them.
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|m| m["readOnly"] == true), "{mounts:?}");
    let cgroup = mounts
        .iter()
        .find(|m| m["mountPath"] == "/sys/fs/cgroup")
        .expect("the cgroup2 tree");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == cgroup["name"])
        .unwrap();
    assert_eq!(volume["hostPath"]["path"], "/sys/fs/cgroup");
    // Every node, and no API server.
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null()),
        "{}",
        pod["tolerations"]
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(!manifests().iter().any(|m| m["kind"] == "ClusterRole"));
}

#[test]
fn the_daemonsets_arguments_are_connbals_and_its_probes_what_it_serves() {
    let container = container();
    let args = strings(&container["args"]);
    assert_eq!(args[0], "trace");
    let at = args
        .iter()
        .position(|a| a == "--metrics")
        .expect("--metrics");
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(args[at + 1], format!("0.0.0.0:{port}"));
    // connbal takes them: the run fails on privileges (or the cgroup),
    // never on a flag.
    let out = connbal()
        .args(&args)
        .args(["--cgroup", "/connbal-no-such-cgroup", "--duration", "1s"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    for refusal in ["unexpected argument", "invalid value", "Usage:"] {
        assert!(!err.contains(refusal), "{err}");
    }
    let name = container["ports"][0]["name"].as_str().unwrap();
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], name, "{probe}");
    }
    // The monitors scrape that port of these pods, labelled by node.
    let labels = &manifest("DaemonSet")["spec"]["template"]["metadata"]["labels"];
    for (kind, endpoints) in [
        ("PodMonitor", "podMetricsEndpoints"),
        ("ServiceMonitor", "endpoints"),
    ] {
        let monitor = manifest(kind);
        assert_eq!(
            &monitor["spec"]["selector"]["matchLabels"], labels,
            "{kind}"
        );
        let endpoint = &monitor["spec"][endpoints][0];
        assert_eq!(endpoint["port"], name, "{kind}");
        assert_eq!(
            endpoint["relabelings"][0]["sourceLabels"][0], "__meta_kubernetes_pod_node_name",
            "{kind}"
        );
        // OpenTelemetry's k8s.node.name, as connbal's own labels follow
        // its conventions.
        assert_eq!(
            endpoint["relabelings"][0]["targetLabel"], "k8s_node_name",
            "{kind}"
        );
    }
    let service = manifest("Service");
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(service["spec"]["ports"][0]["name"], name);
}

/// Whether Debian's python3-kubernetes is there (`cargo xtask setup`
/// installs it); CI must have it.
fn have_the_kubernetes_client() -> bool {
    let there = std::process::Command::new(SYSTEM_PYTHON)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !there {
        assert!(std::env::var("CI").is_err(), "CI needs python3-kubernetes");
        eprintln!("skipped: no python3-kubernetes (cargo xtask setup installs it)");
    }
    there
}

fn validate(path: &std::path::Path) -> std::process::Output {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/k8s_schema.py");
    std::process::Command::new(SYSTEM_PYTHON)
        .arg(script)
        .arg(path)
        .output()
        .expect("python3")
}

#[test]
fn the_manifests_are_valid_against_the_kubernetes_api_schema() {
    if !have_the_kubernetes_client() {
        return;
    }
    let out = validate(&manifest_path());
    let (stdout, stderr) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{stdout}{stderr}");
    for object in [
        "Namespace connbal: valid (V1Namespace)",
        "DaemonSet connbal: valid (V1DaemonSet)",
        "Service connbal: valid (V1Service)",
    ] {
        assert!(stdout.lines().any(|l| l == object), "{object}: {stdout}");
    }
}

/// The validator finds what a person gets wrong: a misspelled field, a
/// value of the wrong type, a required field left out.
#[test]
fn a_broken_daemonset_is_refused_with_each_fault_named() {
    if !have_the_kubernetes_client() {
        return;
    }
    let good = std::fs::read_to_string(manifest_path()).unwrap();
    let broken = good
        .replacen("          securityContext:", "          securityContex:", 1)
        .replacen("containerPort: 9464", "containerPort: \"9464\"", 1);
    assert_ne!(broken, good);
    let unnamed = good.replacen(
        "        - name: connbal\n",
        "        - imagePullPolicy: IfNotPresent\n",
        1,
    );
    assert_ne!(unnamed, good);
    let dir = std::env::temp_dir().join(format!("connbal-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let container = "DaemonSet connbal.spec.template.spec.containers[0]";
    for (text, faults) in [
        (
            broken,
            vec![
                format!("{container}.securityContex: no such field in V1Container"),
                format!("{container}.ports[0].containerPort: expected an integer, got '9464'"),
            ],
        ),
        (
            unnamed,
            vec!["DaemonSet connbal: Invalid value for `name`, must not be `None`".to_string()],
        ),
    ] {
        let path = dir.join("connbal.yaml");
        std::fs::write(&path, text).unwrap();
        let out = validate(&path);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        let stderr = stderr(&out);
        for fault in faults {
            assert!(stderr.lines().any(|l| l == fault), "{fault}: {stderr}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
