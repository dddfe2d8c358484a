//! deploy/ against the code: every manifest parses, runs the image of this version, sets only
//! environment variables the configuration reads, probes paths the router serves, and every
//! consumer has its Deployment, its KEDA scaler and its compose service.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bugflow::config::Config;
use bugflow::consumer::ConsumerSpec;
use serde::Deserialize;
use serde_yaml_ng::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn path(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

/// Every document of a YAML file (`---`-separated).
fn documents(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", file.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The applied manifests (templates hold placeholders; the example Secret is not applied).
fn manifests() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(path("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            !name.ends_with(".template.yaml") && name != "secret.example.yaml"
        })
        .collect();
    files.sort();
    for file in files {
        for doc in documents(&file) {
            out.push((file.clone(), doc));
        }
    }
    out
}

fn image() -> String {
    let cargo: toml::Value =
        toml::from_str(&std::fs::read_to_string(path("Cargo.toml")).unwrap()).unwrap();
    let repo = cargo["package"]["metadata"]["deploy"]["image"]
        .as_str()
        .unwrap();
    format!("{repo}:{}", env!("CARGO_PKG_VERSION"))
}

fn consumers(config: &Config) -> Vec<ConsumerSpec> {
    let mut config = config.clone();
    config.consumers_dir = path("consumers");
    let specs = bugflow::consumer::load_all(&config).unwrap();
    assert!(specs.len() >= 4, "{specs:?}");
    specs
}

fn production() -> Config {
    Config::load(Some(&path("config/production.toml"))).unwrap()
}

/// Every container (and init container) of a workload, wherever its pod template sits.
fn containers(doc: &Value) -> Vec<&Value> {
    let spec = match doc["kind"].as_str() {
        Some("Deployment") => &doc["spec"]["template"]["spec"],
        Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => return Vec::new(),
    };
    ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec[*k].as_sequence())
        .flatten()
        .collect()
}

/// Does `BUGFLOW_A__B` name a field of the configuration?
fn config_reads(variable: &str) -> bool {
    if variable == "BUGFLOW_CONFIG" {
        return true; // the --config flag's variable
    }
    let Some(rest) = variable.strip_prefix("BUGFLOW_") else {
        return true; // not ours (RUST_LOG, PUSHES_FROM_ID)
    };
    let mut value = serde_json::to_value(Config::default()).unwrap();
    for part in rest.to_lowercase().split("__") {
        match value.get(part) {
            Some(v) => value = v.clone(),
            None => return false,
        }
    }
    true
}

#[test]
fn every_yaml_file_in_deploy_parses() {
    let mut files = vec![path("deploy/compose.yaml")];
    for entry in std::fs::read_dir(path("deploy/k8s")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            files.push(p);
        }
    }
    for file in &files {
        assert!(!documents(file).is_empty(), "{} is empty", file.display());
    }
    assert!(files.len() >= 10, "{files:?}");
}

#[test]
fn the_rendered_manifests_match_their_templates() {
    let config = production();
    let image = image();
    let template = std::fs::read_to_string(path("deploy/k8s/consumer.template.yaml")).unwrap();
    for spec in consumers(&config) {
        let expected = template
            .replace("@NAME@", &spec.name)
            .replace("@QUEUE@", &spec.queue)
            .replace("@IMAGE@", &image);
        let file = path(&format!("deploy/k8s/consumer-{}.yaml", spec.name));
        let actual = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(
            actual,
            expected,
            "{} is stale: run deploy/k8s/render",
            file.display()
        );
    }
    for name in ["web", "training"] {
        let template =
            std::fs::read_to_string(path(&format!("deploy/k8s/{name}.template.yaml"))).unwrap();
        let actual = std::fs::read_to_string(path(&format!("deploy/k8s/{name}.yaml"))).unwrap();
        assert_eq!(
            actual,
            template.replace("@IMAGE@", &image),
            "{name}.yaml is stale: run deploy/k8s/render"
        );
    }
}

#[test]
fn the_helper_knows_the_configuration() {
    assert!(config_reads("BUGFLOW_AMQP__URL"));
    assert!(config_reads("BUGFLOW_HTTP__API_KEYS"));
    assert!(config_reads("BUGFLOW_STORE"));
    assert!(!config_reads("BUGFLOW_AMQP__URI"));
    assert!(!config_reads("BUGFLOW_BUGZILLA_API_KEY"));
}

#[test]
fn every_manifest_runs_this_versions_image_with_variables_the_config_reads() {
    let image = image();
    let mut workloads = 0;
    for (file, doc) in manifests() {
        for container in containers(&doc) {
            workloads += 1;
            assert_eq!(
                container["image"].as_str(),
                Some(image.as_str()),
                "{}",
                file.display()
            );
            for var in container["env"].as_sequence().into_iter().flatten() {
                let name = var["name"].as_str().unwrap();
                assert!(
                    config_reads(name),
                    "{}: {name} is read by nothing",
                    file.display()
                );
            }
        }
    }
    assert!(workloads >= 7, "web, 4 consumers, training: {workloads}");

    let compose = &documents(&path("deploy/compose.yaml"))[0];
    for (name, service) in compose["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if ["rabbitmq", "postgres"].contains(&name) {
            continue;
        }
        assert_eq!(
            service["image"].as_str(),
            Some(image.as_str()),
            "compose service {name}"
        );
        for (var, _) in service["environment"].as_mapping().unwrap() {
            let var = var.as_str().unwrap();
            assert!(
                config_reads(var),
                "compose {name}: {var} is read by nothing"
            );
        }
    }
}

#[test]
fn every_consumer_has_a_deployment_a_scaler_and_a_compose_service() {
    let config = production();
    let docs = manifests();
    let compose = &documents(&path("deploy/compose.yaml"))[0];
    for spec in consumers(&config) {
        let consumer_args = ["run", "--consumer", spec.name.as_str()];
        let deployment = docs
            .iter()
            .map(|(_, d)| d)
            .find(|d| {
                d["kind"] == "Deployment"
                    && containers(d).iter().any(|c| {
                        c["args"].as_sequence().is_some_and(|a| {
                            a.iter()
                                .map(|v| v.as_str().unwrap_or_default())
                                .eq(consumer_args)
                        })
                    })
            })
            .unwrap_or_else(|| panic!("no Deployment runs consumer {}", spec.name));
        let name = deployment["metadata"]["name"].as_str().unwrap();
        let scaler = docs
            .iter()
            .map(|(_, d)| d)
            .find(|d| d["kind"] == "ScaledObject" && d["spec"]["scaleTargetRef"]["name"] == name)
            .unwrap_or_else(|| panic!("no ScaledObject scales {name}"));
        let trigger = &scaler["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "rabbitmq");
        assert_eq!(
            trigger["metadata"]["queueName"].as_str(),
            Some(spec.queue.as_str()),
            "{name} scales on another queue than the consumer reads"
        );
        let host = trigger["metadata"]["hostFromEnv"].as_str().unwrap();
        assert!(
            containers(deployment).iter().any(|c| c["env"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|v| v["name"] == host)),
            "{name}: KEDA reads {host}, which the container does not have"
        );
        let service = &compose["services"][spec.name.as_str()];
        assert!(
            service["command"].as_sequence().is_some_and(|a| a
                .iter()
                .map(|v| v.as_str().unwrap_or_default())
                .eq(consumer_args)),
            "compose has no service running consumer {}",
            spec.name
        );
    }
}

#[test]
fn probes_point_at_paths_the_router_serves() {
    let mut probes = 0;
    for (file, doc) in manifests() {
        for container in containers(&doc) {
            let ports: BTreeSet<&str> = container["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str())
                .collect();
            for probe in ["livenessProbe", "readinessProbe"] {
                let get = &container[probe]["httpGet"];
                if get.is_null() {
                    continue;
                }
                probes += 1;
                let p = get["path"].as_str().unwrap();
                assert!(
                    bugflow::http::FIXED_GET_PATHS.contains(&p),
                    "{}: {probe} {p} is not served",
                    file.display()
                );
                let port = get["port"].as_str().unwrap();
                assert!(
                    ports.contains(port),
                    "{}: {probe} port {port} is not declared",
                    file.display()
                );
            }
        }
    }
    assert!(probes >= 10, "{probes}");
}

#[test]
fn the_configmaps_hold_the_repositorys_files_verbatim() {
    let docs = manifests();
    let map = |name: &str| {
        docs.iter()
            .map(|(_, d)| d)
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))["data"]
            .clone()
    };
    let stale = "deploy/k8s/configmap.yaml is stale: run deploy/k8s/render";
    let config = map("bugflow-config");
    let text = std::fs::read_to_string(path("config/production.toml")).unwrap();
    assert_eq!(
        config["production.toml"].as_str(),
        Some(text.as_str()),
        "{stale}"
    );
    let consumer_files = map("bugflow-consumers");
    let mut files = 0;
    for entry in std::fs::read_dir(path("consumers")).unwrap() {
        let entry = entry.unwrap().path();
        let name = entry.file_name().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&entry).unwrap();
        assert_eq!(
            consumer_files[name.as_str()].as_str(),
            Some(text.as_str()),
            "{name}: {stale}"
        );
        files += 1;
    }
    assert_eq!(consumer_files.as_mapping().unwrap().len(), files, "{stale}");
    // Every rendered file is applied.
    let kustomization = &documents(&path("deploy/k8s/kustomization.yaml"))[0];
    let applied: BTreeSet<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for spec in consumers(&production()) {
        let file = format!("consumer-{}.yaml", spec.name);
        assert!(
            applied.contains(file.as_str()),
            "kustomization.yaml does not apply {file}"
        );
    }
}

#[test]
fn the_image_is_multi_stage_non_root_and_carries_the_models() {
    let dockerfile = std::fs::read_to_string(path("deploy/Dockerfile")).unwrap();
    assert!(
        dockerfile
            .lines()
            .filter(|l| l.starts_with("FROM "))
            .count()
            >= 2
    );
    assert!(dockerfile.contains("COPY models models"));
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "root");
    assert_ne!(user.trim(), "0");
    assert!(dockerfile.contains("ENTRYPOINT [\"bugflow\"]"));
}
