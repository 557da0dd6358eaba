//! Test fixtures, in controller-rs style: `TrainingRun::test()` is the example run of
//! `deploy/examples/trainingrun.yaml` in namespace `ml` at generation 1 (`test_solana()` the
//! solana-mode example), and each builder method
//! changes one thing (`TrainingRun::test().replicas(2).suspended()`).

use crate::crd::{Phase, TrainingRun, TrainingRunStatus};

impl TrainingRun {
    pub fn test() -> Self {
        Self::from_example(include_str!("../../deploy/examples/trainingrun.yaml"))
    }

    /// The solana-mode example (`deploy/examples/trainingrun-solana.yaml`).
    pub fn test_solana() -> Self {
        Self::from_example(include_str!(
            "../../deploy/examples/trainingrun-solana.yaml"
        ))
    }

    fn from_example(text: &str) -> Self {
        let mut run: TrainingRun = serde_yaml_ng::from_str(text).expect("the example parses");
        run.metadata.namespace = Some("ml".into());
        run.metadata.uid = Some("0c0ffee0-0000-4000-8000-000000000001".into());
        run.metadata.generation = Some(1);
        run
    }

    pub fn replicas(mut self, replicas: u16) -> Self {
        self.spec.clients.replicas = replicas;
        self
    }

    pub fn min_clients(mut self, min_clients: u16) -> Self {
        self.spec.schedule.min_clients = min_clients;
        self
    }

    pub fn suspended(mut self) -> Self {
        self.spec.suspend = true;
        self
    }

    /// As if the controller had last written `phase` for this generation.
    pub fn observed(mut self, phase: Phase) -> Self {
        self.status = Some(TrainingRunStatus {
            phase: Some(phase),
            observed_generation: self.metadata.generation,
            ..self.status.unwrap_or_default()
        });
        self
    }

    pub fn with_status(mut self, status: TrainingRunStatus) -> Self {
        self.status = Some(status);
        self
    }
}
