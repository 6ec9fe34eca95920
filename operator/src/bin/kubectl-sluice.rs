//! `kubectl sluice`: status, quarantine and replay of a Sluice IngestPipeline with the
//! user's kubeconfig (see docs/kubectl-plugin.md). The logic is in
//! `sluice_operator::plugin`; this is the command line around it.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sluice_operator::plugin::args::{PluginArgs, PluginCommand, StatusOutput, remote_command};
use sluice_operator::plugin::{kube_io, render, view};

fn main() -> ExitCode {
    let args = PluginArgs::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kubectl-sluice: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kubectl-sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    let client = kube::Client::try_default()
        .await
        .context("reading the kubeconfig")?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let name = match &args.command {
        PluginCommand::Status { pipeline, .. }
        | PluginCommand::Quarantine { pipeline, .. }
        | PluginCommand::Replay { pipeline, .. } => pipeline.clone(),
    };
    let pipeline = kube_io::pipeline(&client, &namespace, &name).await?;
    let pods = kube_io::worker_pods(&client, &namespace, &name).await?;
    if let Some(command) = remote_command(&args.command) {
        let pod = kube_io::exec_target(&pods).map_err(anyhow::Error::msg)?;
        let out = kube_io::exec(&client, &namespace, &pod, command).await?;
        print!("{}", out.stdout);
        eprint!("{}", out.stderr);
        return Ok(if out.success {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let PluginCommand::Status { output, events, .. } = args.command else {
        return Ok(ExitCode::SUCCESS);
    };
    let (samples, totals, event_list) = tokio::join!(
        kube_io::sample_workers(&client, &namespace, &pods),
        kube_io::totals(&client, &namespace, &pods),
        kube_io::events(&client, &namespace, &name),
    );
    let event_list = event_list.unwrap_or_default();
    let v = view::build(view::Inputs {
        pipeline: &pipeline,
        pods: &pods,
        samples: &samples,
        totals,
        events: &event_list,
        max_events: events,
    });
    let text = match output {
        StatusOutput::Text => render::status_text(&v),
        StatusOutput::Json => serde_json::to_string_pretty(&v)? + "\n",
        StatusOutput::Yaml => serde_yaml::to_string(&v)?,
    };
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
