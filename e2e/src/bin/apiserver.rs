//! `demeter-apiserver`: the in-memory Kubernetes API server as a process, for running kubectl
//! and `demeter-operator run` against it by hand. It writes a kubeconfig, prints where it is,
//! and serves until interrupted. TrainingRuns are served once their CRD is applied.
//!
//! ```text
//! $ demeter-apiserver --kubeconfig /tmp/kubeconfig
//! url: http://127.0.0.1:41537
//! kubeconfig: /tmp/kubeconfig
//! ready
//! $ export KUBECONFIG=/tmp/kubeconfig
//! $ kubectl apply -f deploy/crds/ -f deploy/examples/trainingrun.yaml
//! $ demeter-operator run --identity dev --log-format text &
//! $ kubectl get tr
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use demeter_e2e::ApiServer;

#[derive(Parser, Debug)]
#[command(version, about = "An in-memory Kubernetes API server for tests")]
struct Args {
    /// Where to write the kubeconfig that points at this server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The kubeconfig context's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let server = ApiServer::start()
            .await
            .context("binding a loopback port")?;
        std::fs::write(&args.kubeconfig, server.kubeconfig(&args.namespace))
            .with_context(|| format!("--kubeconfig {}", args.kubeconfig.display()))?;
        println!("url: {}", server.url());
        println!("kubeconfig: {}", args.kubeconfig.display());
        println!("ready");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok(())
    })
}
