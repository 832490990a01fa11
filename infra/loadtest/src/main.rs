// A CLI's job is to print: the report goes to stdout, the progress line and diagnostics to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]
//! `corebank-loadtest`: the seed's scenario-driven load runner, plus a report and a balance audit.
//!
//! It seeds accounts, runs `--workers` request loops (or, with `--rate`, a fixed request rate) for `--duration`
//! seconds over a hot/cold account pool,
//! tracks every account's expected balance on the client side, prints per-operation status histograms and
//! latency percentiles, and then audits the server: balances converge to the expectations, none is
//! negative, and every history is versions 1..N. Run with `--help` for the flags.

mod accounts;
mod args;
mod audit;
mod auth;
mod error;
mod http;
mod ids;
mod money;
mod plot;
mod report;
mod scenario;
mod sigv4;
mod stats;
#[cfg(test)]
mod testbank;

use std::process::ExitCode;
use std::sync::Arc;

use crate::args::Config;
use crate::error::Error;

fn main() -> ExitCode {
    let config = match args::parse_from(std::env::args_os(), |name| std::env::var(name).ok()) {
        Ok(config) => config,
        // `--help` and `--version` print to stdout and exit 0; bad flags print to stderr and exit 2.
        Err(e) => e.exit(),
    };
    match run(&config) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("corebank-loadtest: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the test; `Ok(true)` when it passed.
fn run(config: &Config) -> Result<bool, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::Runtime)?;
    runtime.block_on(run_async(config))
}

async fn run_async(config: &Config) -> Result<bool, Error> {
    let ctx = Arc::new(scenario::Ctx::new(config)?);
    scenario::watch_interrupts(Arc::clone(&ctx));

    eprintln!(
        "corebank-loadtest: run {} against {}: seeding {} accounts ({} concurrent)...",
        ctx.run_id, config.base_url, config.accounts, config.seed_concurrency
    );
    let setup = scenario::seed(&ctx, config).await?;
    let pacing = match config.model {
        args::Model::Closed => format!("{} workers", config.workers),
        args::Model::Open { rate, max_in_flight } => {
            format!("{rate} requests a second (at most {max_in_flight} in flight)")
        }
    };
    eprintln!(
        "corebank-loadtest: {} accounts ready in {:.2} s; load for {} s with {pacing}",
        setup.accounts_created,
        setup.elapsed.as_secs_f64(),
        config.duration_secs,
    );
    let load = scenario::run_load(&ctx, config).await?;
    if let Some(path) = &config.ids {
        let transfers = ctx.transfers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let ids = ids::Ids::of(&ctx.run_id, &ctx.pool.snapshot(), &transfers);
        drop(transfers);
        ids.write(path)?;
        eprintln!("corebank-loadtest: ids written to {}", path.display());
    }
    eprintln!("corebank-loadtest: auditing (up to {} s after the load)...", config.audit_timeout_secs);
    let audit = audit::run(&ctx, config, load.end).await?;
    let report = report::build(config, &ctx.run_id, &setup, &load, audit);

    print!("{report}");
    if let Some(path) = &config.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).map_err(|source| Error::Write { path: path.clone(), source })?;
        eprintln!("corebank-loadtest: JSON report written to {}", path.display());
    }
    if let Some(path) = &config.plot {
        plot::write_svg(path, &report.timeline, config.duration_secs)?;
        eprintln!("corebank-loadtest: plot written to {}", path.display());
    }
    Ok(report.verdict.pass)
}
