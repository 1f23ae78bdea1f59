//! `meshd bootstrap`: a stock-Envoy bootstrap for one workload.

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
