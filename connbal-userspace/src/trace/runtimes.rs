//! Container names from the runtimes' APIs: a container's cgroup path
//! carries only its id, and people think in `web-1`, compose services and
//! pods. Docker's Engine API and Podman's compatible one answer
//! `GET /containers/{id}/json` with the name, image and labels.
//!
//! Never on the event path: a cgroup's first record queues its container
//! (bounded), one task asks the sockets in turn with a timeout, and the
//! answer fills the container's `names` cell, which every client of that
//! cgroup shares. A missing, refusing or slow socket leaves ids in the
//! report and one note, never an error.

use crate::aggregator::{Container, ContainerNames};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where runtimes put their API sockets when none is given.
pub const DEFAULT_SOCKETS: [&str; 3] = [
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/podman/podman.sock",
];
/// Where containerd and CRI-O keep their running containers' OCI specs
/// when no `--runtime-state` is given.
pub const DEFAULT_STATES: [&str; 2] = ["/run/containerd", "/run/containers/storage"];
/// containerd's bundles: `<state>/io.containerd.runtime.v2.task/<ns>/<id>/`.
const CONTAINERD_TASKS: &str = "io.containerd.runtime.v2.task";
/// CRI-O's: `<state>/overlay-containers/<id>/userdata/`.
const CRIO_CONTAINERS: &str = "overlay-containers";
/// containerd namespaces looked in, at most.
const MAX_NAMESPACES: usize = 64;
/// Containers waiting to be asked about; past it a container stays an id.
const QUEUED_MAX: usize = 1024;
/// Containers asked about over the trace, at most (each is asked once).
const ASKED_MAX: usize = 1 << 16;
/// One request, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// An inspect answer is a few KiB; a larger one is not read.
const ANSWER_MAX: usize = 1 << 20;
/// Notes kept for the report, at most.
const NOTES_MAX: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("reading the answer: {0}")]
    Body(String),
    #[error("answered {0}")]
    Status(hyper::StatusCode),
    #[error("the answer is not the JSON of a container: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One API socket and the runtime it belongs to.
#[derive(Clone, Debug)]
struct Socket {
    path: PathBuf,
    runtime: &'static str,
}

/// The queue to the task that asks the runtimes, and what it noted.
pub struct RuntimeApi {
    queue: mpsc::Sender<Container>,
    /// Shared by the loop (a cgroup's first record) and the cgroup
    /// watcher's thread (a cgroup's creation).
    asked: Mutex<HashSet<String>>,
    notes: Arc<Mutex<Vec<String>>>,
}

impl RuntimeApi {
    /// Starts asking `sockets` and reading the specs under `states` (the
    /// defaults that exist when none are given) on the current tokio
    /// runtime. `None` outside one.
    pub fn start(sockets: &[PathBuf], states: &[PathBuf]) -> Option<Self> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let sockets: Vec<Socket> = if sockets.is_empty() {
            DEFAULT_SOCKETS
                .iter()
                .map(Path::new)
                .filter(|p| p.exists())
                .map(Socket::at)
                .collect()
        } else {
            sockets.iter().map(|p| Socket::at(p)).collect()
        };
        let states: Vec<PathBuf> = if states.is_empty() {
            DEFAULT_STATES
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect()
        } else {
            states.to_vec()
        };
        let notes = Arc::new(Mutex::new(Vec::new()));
        let (queue, waiting) = mpsc::channel(QUEUED_MAX);
        handle.spawn(ask_each(waiting, (sockets, states), Arc::clone(&notes)));
        Some(Self {
            queue,
            asked: Mutex::new(HashSet::new()),
            notes,
        })
    }

    /// Queues `container` to be named, once; never waits.
    pub fn ask(&self, container: &Container) {
        let Ok(mut asked) = self.asked.lock() else {
            return;
        };
        if asked.len() >= ASKED_MAX || !asked.insert(container.id.clone()) {
            return;
        }
        if self.queue.try_send(container.clone()).is_err() {
            // Full: it stays an id; a later cgroup of it may ask again.
            asked.remove(&container.id);
        }
    }

    /// What went wrong, one line per socket (and one if there was none).
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

impl Socket {
    fn at(path: &Path) -> Self {
        let runtime = if path.to_string_lossy().contains("podman") {
            "podman"
        } else {
            "docker"
        };
        Self {
            path: path.to_path_buf(),
            runtime,
        }
    }
}

/// The task: each queued container, asked of its own runtime's sockets
/// first, then the others (a daemon's `--cgroup-parent` hides which
/// runtime made a cgroup).
async fn ask_each(
    mut waiting: mpsc::Receiver<Container>,
    (sockets, states): (Vec<Socket>, Vec<PathBuf>),
    notes: Arc<Mutex<Vec<String>>>,
) {
    let note = |line: String| {
        if let Ok(mut notes) = notes.lock() {
            if notes.len() < NOTES_MAX && !notes.contains(&line) {
                notes.push(line);
            }
        }
    };
    while let Some(container) = waiting.recv().await {
        // A pod's container: its spec, a file read, before any socket.
        if let Some(names) = from_specs(&states, &container.id) {
            let _ = container.names.set(names);
            continue;
        }
        if sockets.is_empty() {
            note(format!(
                "containers are shown by id: no runtime API socket ({}; give one with --runtime-socket) and no pod annotations in a runtime's state ({})",
                DEFAULT_SOCKETS.join(", "),
                DEFAULT_STATES.join(", ")
            ));
            continue;
        }
        let mut order: Vec<&Socket> = sockets.iter().collect();
        order.sort_by_key(|s| s.runtime != container.runtime);
        for socket in order {
            let asked = tokio::time::timeout(REQUEST_TIMEOUT, inspect(socket, &container.id)).await;
            match asked.unwrap_or(Err(RuntimeError::Timeout(REQUEST_TIMEOUT))) {
                Ok(Some(names)) => {
                    let _ = container.names.set(names);
                    break;
                }
                // Not this runtime's container.
                Ok(None) => {}
                Err(error) => note(format!(
                    "container names from {}: {error}; its containers are shown by id",
                    socket.path.display()
                )),
            }
        }
    }
}

/// The names kubelet's annotations give a container in its OCI spec under
/// one of `states`: containerd's CRI plugin writes
/// `io.kubernetes.cri.sandbox-name`, `.sandbox-namespace` and
/// `.container-name`; CRI-O writes `io.kubernetes.pod.name`,
/// `.pod.namespace` and `.container.name`. `None` without them (a plain
/// `ctr run`, or no spec): other sources may know it.
///
/// Plain file reads on the task: runtimes keep these under /run, a tmpfs,
/// where a read of a few KiB never waits on a disk.
fn from_specs(states: &[PathBuf], id: &str) -> Option<ContainerNames> {
    for state in states {
        let mut specs = vec![(
            state
                .join(CRIO_CONTAINERS)
                .join(id)
                .join("userdata/config.json"),
            "cri-o",
        )];
        if let Ok(namespaces) = std::fs::read_dir(state.join(CONTAINERD_TASKS)) {
            for namespace in namespaces.flatten().take(MAX_NAMESPACES) {
                specs.push((namespace.path().join(id).join("config.json"), "containerd"));
            }
        }
        for (spec, runtime) in specs {
            let Ok(text) = std::fs::read(&spec) else {
                continue;
            };
            if let Some(names) = names_of_spec(runtime, &text) {
                return Some(names);
            }
        }
    }
    None
}

/// Pod names from an OCI spec's annotations.
fn names_of_spec(runtime: &'static str, spec: &[u8]) -> Option<ContainerNames> {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    if spec.len() > ANSWER_MAX {
        return None;
    }
    let spec: Spec = serde_json::from_slice(spec).ok()?;
    let annotation = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| spec.annotations.get(*k).filter(|v| !v.is_empty()).cloned())
    };
    let pod_name = annotation(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]);
    let pod_namespace = annotation(&[
        "io.kubernetes.cri.sandbox-namespace",
        "io.kubernetes.pod.namespace",
    ]);
    let pod_container = annotation(&[
        "io.kubernetes.cri.container-name",
        "io.kubernetes.container.name",
    ]);
    let (Some(pod), Some(namespace)) = (&pod_name, &pod_namespace) else {
        return None;
    };
    // A pod's sandbox (pause) container has no container name.
    let name = pod_container.clone().unwrap_or_else(|| "pause".to_string());
    Some(ContainerNames {
        runtime,
        shown: format!("{namespace}/{pod}/{name}"),
        name,
        image: annotation(&[
            "io.kubernetes.cri.image-name",
            "io.kubernetes.cri-o.ImageName",
        ]),
        compose_project: None,
        compose_service: None,
        pod_name,
        pod_namespace,
        pod_container,
    })
}

/// `GET /containers/{id}/json` on `socket`: the container's names, `None`
/// when the runtime does not know it.
async fn inspect(socket: &Socket, id: &str) -> Result<Option<ContainerNames>, RuntimeError> {
    let stream = tokio::net::UnixStream::connect(&socket.path)
        .await
        .map_err(RuntimeError::Connect)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    // The connection is driven beside the request and ends with it.
    let driven = tokio::spawn(connection);
    // The id is 64 hex digits (checked when the cgroup was named), safe in
    // a path as it is.
    let request = hyper::Request::get(format!("/containers/{id}/json"))
        .header(hyper::header::HOST, "connbal")
        .body(Empty::<Bytes>::new())
        .expect("a GET of a hex id is a valid request");
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), ANSWER_MAX)
        .collect()
        .await
        .map_err(|e| RuntimeError::Body(e.to_string()))?
        .to_bytes();
    driven.abort();
    match status {
        hyper::StatusCode::OK => Ok(Some(names_of(socket.runtime, &body)?)),
        hyper::StatusCode::NOT_FOUND => Ok(None),
        other => Err(RuntimeError::Status(other)),
    }
}

/// The names in an inspect answer: `Name` (with Docker's leading `/`),
/// `Config.Image` and the compose and kubelet labels of `Config.Labels`.
fn names_of(runtime: &'static str, answer: &[u8]) -> Result<ContainerNames, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Inspect {
        #[serde(rename = "Name", default)]
        name: String,
        #[serde(rename = "Config", default)]
        config: Option<Config>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "Image", default)]
        image: Option<String>,
        #[serde(rename = "Labels", default)]
        labels: Option<std::collections::HashMap<String, String>>,
    }
    let inspect: Inspect = serde_json::from_slice(answer)?;
    let config = inspect.config.unwrap_or(Config {
        image: None,
        labels: None,
    });
    let labels = config.labels.unwrap_or_default();
    let label = |key: &str| labels.get(key).filter(|v| !v.is_empty()).cloned();
    let name = inspect.name.trim_start_matches('/').to_string();
    let (pod_name, pod_namespace, pod_container) = (
        label("io.kubernetes.pod.name"),
        label("io.kubernetes.pod.namespace"),
        label("io.kubernetes.container.name"),
    );
    let shown = match (&pod_namespace, &pod_name, &pod_container) {
        (Some(ns), Some(pod), Some(container)) => format!("{ns}/{pod}/{container}"),
        _ => name.clone(),
    };
    Ok(ContainerNames {
        runtime,
        shown,
        name,
        image: config.image.filter(|i| !i.is_empty()),
        compose_project: label("com.docker.compose.project"),
        compose_service: label("com.docker.compose.service"),
        pod_name,
        pod_namespace,
        pod_container,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inspect_answer_gives_the_name_image_and_the_labels_people_group_by() {
        let answer = br#"{"Id":"3f2a","Name":"/shop-web-1","Config":{"Image":"shop/web:1.2",
            "Labels":{"com.docker.compose.project":"shop","com.docker.compose.service":"web",
            "other":"x"}}}"#;
        let names = names_of("docker", answer).unwrap();
        assert_eq!(names.shown, "shop-web-1");
        assert_eq!(names.name, "shop-web-1");
        assert_eq!(names.image.as_deref(), Some("shop/web:1.2"));
        assert_eq!(names.compose_project.as_deref(), Some("shop"));
        assert_eq!(names.compose_service.as_deref(), Some("web"));
        assert_eq!(names.pod_name, None);

        let kubelet = br#"{"Name":"/k8s_app_web-5d9c_prod_0","Config":{"Labels":{
            "io.kubernetes.pod.name":"web-5d9c","io.kubernetes.pod.namespace":"prod",
            "io.kubernetes.container.name":"app"}}}"#;
        let names = names_of("docker", kubelet).unwrap();
        assert_eq!(names.shown, "prod/web-5d9c/app");
        assert_eq!(names.image, None);

        assert!(names_of("docker", b"[1,2]").is_err());
        // Podman's compatible API leaves Config's labels null.
        let names = names_of("podman", br#"{"Name":"db","Config":{"Labels":null}}"#).unwrap();
        assert_eq!((names.shown.as_str(), names.runtime), ("db", "podman"));
    }

    /// The specs containerd's CRI plugin and CRI-O write, where they keep
    /// them; a spec without pod annotations names nothing.
    #[test]
    fn a_pods_container_is_named_from_its_oci_spec() {
        let state = std::env::temp_dir().join(format!("connbal-specs-{}", std::process::id()));
        let id = "cd".repeat(32);
        let containerd = state.join(CONTAINERD_TASKS).join("k8s.io").join(&id);
        std::fs::create_dir_all(&containerd).unwrap();
        std::fs::write(
            containerd.join("config.json"),
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-name":"web-5d9c",
            "io.kubernetes.cri.sandbox-namespace":"prod","io.kubernetes.cri.container-name":"app",
            "io.kubernetes.cri.image-name":"shop/web:1.2"}}"#,
        )
        .unwrap();
        let names = from_specs(std::slice::from_ref(&state), &id).unwrap();
        assert_eq!(names.shown, "prod/web-5d9c/app");
        assert_eq!(
            (names.runtime, names.image.as_deref()),
            ("containerd", Some("shop/web:1.2"))
        );

        let crio_id = "ef".repeat(32);
        let crio = state.join(CRIO_CONTAINERS).join(&crio_id).join("userdata");
        std::fs::create_dir_all(&crio).unwrap();
        std::fs::write(
            crio.join("config.json"),
            r#"{"annotations":{"io.kubernetes.pod.name":"db-0","io.kubernetes.pod.namespace":"data",
            "io.kubernetes.container.name":"postgres"}}"#,
        )
        .unwrap();
        let names = from_specs(std::slice::from_ref(&state), &crio_id).unwrap();
        assert_eq!(
            (names.shown.as_str(), names.runtime),
            ("data/db-0/postgres", "cri-o")
        );

        std::fs::write(
            containerd.join("config.json"),
            r#"{"annotations":{"x":"y"}}"#,
        )
        .unwrap();
        assert!(from_specs(std::slice::from_ref(&state), &id).is_none());
        assert!(from_specs(std::slice::from_ref(&state), &"00".repeat(32)).is_none());
        std::fs::remove_dir_all(&state).unwrap();
    }

    /// A socket nobody listens on, and one that is not there: ids stay,
    /// one note each, and the task goes on to the next container.
    #[tokio::test]
    async fn a_missing_or_silent_socket_leaves_ids_and_a_note() {
        let dir = std::env::temp_dir().join(format!("connbal-runtimes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let silent = dir.join("silent.sock");
        let _ = std::fs::remove_file(&silent);
        let listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
        let api = RuntimeApi::start(
            &[dir.join("absent.sock"), silent.clone()],
            std::slice::from_ref(&dir),
        )
        .unwrap();
        let container = Container::new("docker", &"ab".repeat(32));
        api.ask(&container);
        api.ask(&container);
        tokio::time::sleep(REQUEST_TIMEOUT + Duration::from_millis(500)).await;
        assert!(container.names.get().is_none());
        let notes = api.notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("absent.sock: connect:"), "{notes:?}");
        assert!(
            notes[1].contains("silent.sock: no answer within"),
            "{notes:?}"
        );
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
