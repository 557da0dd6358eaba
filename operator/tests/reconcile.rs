//! The reconciler against the in-memory API server (e2e's `ApiServer`), through the real
//! `kube::Client` and `Controller`: what a run turns into, deletion with the finalizer,
//! suspend and resume, pods deleted and failing, invalid specs, and two replicas of which one
//! leads, and progress read from the clients' `/metrics`. The tests play the kubelet by
//! writing pod status.

use std::sync::atomic::Ordering;
use std::time::Duration;

use demeter_e2e::ApiServer;
use demeter_operator::controller::{self, FINALIZER};
use demeter_operator::crd::{IdentityPolicy, Phase, TrainingRun};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

mod support;
use support::{
    NAMESPACE, client_pods, events, eventually, fast, operator, run_status, server, start,
};

/// The example run with three clients, all of them needed, each restarted at most once, 1 s
/// after its failure.
fn example() -> TrainingRun {
    let mut run: TrainingRun =
        serde_yaml_ng::from_str(include_str!("../../deploy/examples/trainingrun.yaml")).unwrap();
    run.metadata.namespace = Some(NAMESPACE.into());
    run.spec.clients.replicas = 3;
    run.spec.schedule.init_min_clients = 3;
    run.spec.schedule.min_clients = 3;
    run.spec.failure_policy.max_restarts = 1;
    run.spec.failure_policy.backoff_seconds = 1;
    run
}

/// The kubelet's part: the pod runs and passes its readiness probe.
async fn kubelet_runs(client: &Client, pod: &str) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .patch_status(pod, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

async fn kubelet_oom_kills(client: &Client, pod: &str) {
    let status = json!({"status": {
        "phase": "Failed",
        "containerStatuses": [{
            "name": "trainer", "image": "", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
        }],
    }});
    Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .patch_status(pod, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// A client's `/metrics` as the trainer serves it, on a free loopback port; the port.
async fn client_metrics(page: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { page }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test]
async fn a_run_becomes_its_children_then_goes_away_keeping_its_identities() {
    let (server, client, _operator, runs) = start().await;
    // Every client pod (all at 127.0.0.1 here) reports its progress on the run's port.
    let mut run = example();
    run.spec.clients.port = client_metrics(
        "demeter_step 41\ndemeter_epoch 2\ndemeter_loss 3.25\ndemeter_tokens_total 1000\n\
         demeter_members_active 3\ndemeter_results_applied 3\n",
    )
    .await;
    runs.create(&PostParams::default(), &run).await.unwrap();

    let pods = eventually("three client pods", || async {
        let pods = client_pods(&client, "moby-150m").await;
        (pods.len() == 3).then_some(pods)
    })
    .await;
    let run = runs.get("moby-150m").await.unwrap();
    assert!(run.finalizers().contains(&FINALIZER.to_owned()));
    for pod in &pods {
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("TrainingRun", run.uid().unwrap().as_str())
        );
    }

    // One identity per client, and the run file allows exactly those keys.
    let secrets = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    let mut keys = Vec::new();
    for index in 0..3 {
        let secret = secrets
            .get(&format!("moby-150m-client-{index}-identity"))
            .await
            .unwrap();
        let wallet = &secret.data.unwrap()["keypair.json"].0;
        keys.push(demeter_operator::identity::public_key(wallet).unwrap());
    }
    let config = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .get("moby-150m-config")
        .await
        .unwrap();
    let run_file = &config.data.unwrap()["run.toml"];
    for key in &keys {
        assert!(run_file.contains(key.as_str()), "{key} in {run_file}");
    }
    let services = Api::<Service>::namespaced(client.clone(), NAMESPACE);
    assert!(services.get_opt("moby-150m-peers").await.unwrap().is_some());
    assert!(
        services
            .get_opt("moby-150m-coordinator")
            .await
            .unwrap()
            .is_some()
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    assert!(
        deployments
            .get_opt("moby-150m-coordinator")
            .await
            .unwrap()
            .is_some()
    );

    // Children are applied server-side under one field manager, status through /status.
    let requests = server.requests();
    let applies: Vec<_> = requests
        .iter()
        .filter(|r| r.content_type.as_deref() == Some("application/apply-patch+yaml"))
        .collect();
    assert!(applies.iter().all(
        |r| r.query.contains("fieldManager=demeter-operator") && r.query.contains("force=true")
    ));
    assert!(
        applies
            .iter()
            .any(|r| r.path == "/api/v1/namespaces/ml/pods/moby-150m-client-2")
    );
    let status_apply = applies
        .iter()
        .find(|r| r.path.ends_with("/trainingruns/moby-150m/status"))
        .expect("status is applied on the status subresource");
    assert_eq!(status_apply.body["status"]["clients"]["desired"], 3);

    let status = run_status(&client, "moby-150m").await.unwrap();
    assert_eq!(status.phase, Some(Phase::Pending));
    assert_eq!(status.observed_generation, Some(1));

    for pod in &pods {
        kubelet_runs(&client, &pod.name_any()).await;
    }
    let status = eventually("the run Running with 3/3 ready", || async {
        run_status(&client, "moby-150m")
            .await
            .filter(|s| s.phase == Some(Phase::Running) && s.clients.ready == 3)
    })
    .await;
    assert_eq!(status.clients.ready_text, "3/3");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "AllClientsReady")
    );
    // Progress comes from the clients in centralized mode: the newest step, its loss, and
    // the tokens of all three.
    assert_eq!((status.step, status.epoch), (41, 2));
    assert_eq!(status.last_loss, Some(3.25));
    assert_eq!(status.tokens, 3000);
    assert_eq!((status.clients.joined, status.clients.witnessed), (3, 3));

    runs.delete("moby-150m", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the run and its children gone", || async {
        let run_gone = runs.get_opt("moby-150m").await.unwrap().is_none();
        let pods_gone = client_pods(&client, "moby-150m").await.is_empty();
        let config_gone = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
            .get_opt("moby-150m-config")
            .await
            .unwrap()
            .is_none();
        (run_gone && pods_gone && config_gone).then_some(())
    })
    .await;
    // The keys hold the clients' points: they stay.
    assert_eq!(
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
}

#[tokio::test]
async fn identities_go_with_the_run_when_the_spec_says_delete() {
    let (_server, client, _operator, runs) = start().await;
    let mut run = example();
    run.spec.identity_policy = IdentityPolicy::Delete;
    runs.create(&PostParams::default(), &run).await.unwrap();
    eventually("three client pods", || async {
        (client_pods(&client, "moby-150m").await.len() == 3).then_some(())
    })
    .await;
    runs.delete("moby-150m", &DeleteParams::default())
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    eventually("the identities deleted", || async {
        secrets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_deleted_pod_is_recreated_and_suspend_resume_round_trips() {
    let (_server, client, _operator, runs) = start().await;
    runs.create(&PostParams::default(), &example())
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let first = eventually("client 1", || async {
        pods.get_opt("moby-150m-client-1").await.unwrap()
    })
    .await;
    pods.delete("moby-150m-client-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("client 1 recreated", || async {
        pods.get_opt("moby-150m-client-1")
            .await
            .unwrap()
            .filter(|p| p.uid() != first.uid())
    })
    .await;

    let suspend = Patch::Merge(json!({"spec": {"suspend": true}}));
    runs.patch("moby-150m", &PatchParams::default(), &suspend)
        .await
        .unwrap();
    eventually("client pods deleted and the run Suspended", || async {
        let status = run_status(&client, "moby-150m").await?;
        let empty = client_pods(&client, "moby-150m").await.is_empty();
        (empty && status.phase == Some(Phase::Suspended)).then_some(())
    })
    .await;
    let coordinator = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get("moby-150m-coordinator")
        .await
        .unwrap();
    assert_eq!(coordinator.spec.unwrap().replicas, Some(0));

    let resume = Patch::Merge(json!({"spec": {"suspend": false}}));
    runs.patch("moby-150m", &PatchParams::default(), &resume)
        .await
        .unwrap();
    eventually("three pods again", || async {
        (client_pods(&client, "moby-150m").await.len() == 3).then_some(())
    })
    .await;
    eventually("a Resumed event", || async {
        (!events(&client, "Resumed").await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_failing_client_is_restarted_with_backoff_then_the_run_fails() {
    let (server, client, _operator, runs) = start().await;
    runs.create(&PostParams::default(), &example())
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let first = eventually("client 0", || async {
        pods.get_opt("moby-150m-client-0").await.unwrap()
    })
    .await;

    kubelet_oom_kills(&client, "moby-150m-client-0").await;
    let status = eventually("the restart recorded", || async {
        run_status(&client, "moby-150m")
            .await
            .filter(|s| !s.restarts.is_empty())
    })
    .await;
    assert_eq!(status.restarts[0].count, 1);
    assert_eq!(status.restarts[0].last_failure, "OOMKilled (exit code 137)");
    // The status that recorded the failure said Degraded (the restart may be done by now).
    let degraded_with_restart = server.requests().iter().any(|r| {
        let status = &r.body["status"];
        r.path.ends_with("/trainingruns/moby-150m/status")
            && status["restarts"][0]["count"] == 1
            && status["conditions"].as_array().is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c["type"] == "Degraded" && c["status"] == "True")
            })
    });
    assert!(degraded_with_restart);
    let restarted = eventually("client 0 back after its backoff", || async {
        pods.get_opt("moby-150m-client-0")
            .await
            .unwrap()
            .filter(|p| p.uid() != first.uid())
    })
    .await;
    let note = events(&client, "ClientRestarting").await[0]
        .note
        .clone()
        .unwrap();
    assert!(
        note.contains("OOMKilled (exit code 137); restart 1 of 1 in 1s"),
        "{note}"
    );

    // The second failure is past maxRestarts (1): three clients are needed, two can run.
    kubelet_oom_kills(&client, &restarted.name_any()).await;
    let status = eventually("the run Failed", || async {
        run_status(&client, "moby-150m")
            .await
            .filter(|s| s.phase == Some(Phase::Failed))
    })
    .await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("failurePolicy.maxRestarts (1)"),
        "{}",
        ready.message
    );
    eventually("the other clients' pods deleted", || async {
        client_pods(&client, "moby-150m")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(events(&client, "ClientGaveUp").await.len(), 1);
    assert!(!events(&client, "Failed").await.is_empty());
}

#[tokio::test]
async fn invalid_and_malformed_runs_are_reported_on_the_object_and_break_nothing() {
    // The malformed run below was stored under an older, looser CRD; the current one is then
    // applied, as an upgrade would, and the stored object stays.
    use kube::CustomResourceExt;
    let mut loose = serde_json::to_value(TrainingRun::crd()).unwrap();
    loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let server = ApiServer::start().await.unwrap();
    server.install_crd(loose).unwrap();
    let client = server.client(NAMESPACE).await.unwrap();
    let _operator = operator(&server, "operator-0", fast()).await;

    // Passes the schema but not the operator: a centralized run's name is its 32-byte id.
    let mut long = example();
    long.metadata.name = Some("a-run-name-longer-than-thirty-two-bytes".into());
    let runs = Api::<TrainingRun>::namespaced(client.clone(), NAMESPACE);
    runs.create(&PostParams::default(), &long).await.unwrap();

    // Does not even parse (the current CRD refuses it; the older one did not): it must not
    // stop the watch of the other runs.
    let resource = controller::training_run_resource();
    let untyped = Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &resource);
    let mut malformed = serde_json::to_value(example()).unwrap();
    malformed["metadata"]["name"] = "malformed".into();
    malformed["spec"]["clients"]["replicas"] = "three".into();
    let malformed: DynamicObject = serde_json::from_value(malformed).unwrap();
    untyped
        .create(&PostParams::default(), &malformed)
        .await
        .unwrap();
    server
        .install_crd(serde_json::to_value(TrainingRun::crd()).unwrap())
        .unwrap();
    runs.create(&PostParams::default(), &example())
        .await
        .unwrap();

    let status = eventually("the long name reported", || async {
        run_status(&client, &long.name_any())
            .await
            .filter(|s| s.phase == Some(Phase::Invalid))
    })
    .await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("at most 32 bytes"),
        "{}",
        ready.message
    );

    let reported = eventually("the malformed run reported", || async {
        let object = untyped.get("malformed").await.unwrap();
        (object.data["status"]["phase"] == "Invalid").then_some(object)
    })
    .await;
    let message = reported.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()["message"]
        .clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .starts_with("spec.clients.replicas: "),
        "{message}"
    );

    eventually("the valid run's pods", || async {
        (client_pods(&client, "moby-150m").await.len() == 3).then_some(())
    })
    .await;
    // One event each, no requeue storm: a second look changes nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events(&client, "InvalidSpec").await.len(), 2);
    assert!(client_pods(&client, &long.name_any()).await.is_empty());
}

#[tokio::test]
async fn of_two_replicas_one_leads_and_the_other_takes_over_when_it_stops() {
    let server = server().await;
    let client = server.client(NAMESPACE).await.unwrap();
    let first = operator(&server, "operator-a", fast()).await;
    eventually("a leader", || async {
        first.leading.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let second = operator(&server, "operator-b", fast()).await;

    let runs = Api::<TrainingRun>::namespaced(client.clone(), NAMESPACE);
    runs.create(&PostParams::default(), &example())
        .await
        .unwrap();
    eventually("three client pods", || async {
        (client_pods(&client, "moby-150m").await.len() == 3).then_some(())
    })
    .await;
    assert!(
        !second.leading.load(Ordering::SeqCst),
        "the standby does not act"
    );
    let reporters: Vec<String> = events(&client, "SuccessfulCreate")
        .await
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .collect();
    assert!(
        !reporters.is_empty() && reporters.iter().all(|r| r == "operator-a"),
        "{reporters:?}"
    );
    drop(first);

    // Without renewals the lease expires (3 s) and the standby takes over.
    eventually("the standby leading", || async {
        second.leading.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    pods.delete("moby-150m-client-0", &DeleteParams::default())
        .await
        .unwrap();
    eventually("client 0 recreated by the new leader", || async {
        pods.get_opt("moby-150m-client-0").await.unwrap()
    })
    .await;
    let metrics = second.ctx.metrics.render();
    let desired =
        r#"demeter_operator_run_clients{name="moby-150m",namespace="ml",state="desired"} 3"#;
    assert!(metrics.contains(desired), "{metrics}");
}
