//! `lienthong`: the one binary. It parses arguments, reads and writes files, and calls the
//! library crates; the logic lives in those.

// First: its macros are used by the modules below.
#[macro_use]
mod output;

mod audit;
mod audit_query;
mod audit_serve;
mod demo;
mod files;
mod log;
mod logging;
mod node;
mod pki;
mod registry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lienthong", version, about = "Lienthong data-exchange gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Audit: query a node's log, bundle an exchange's proof and verify it offline, and run the
    /// central audit service (collection from every node, sharing report, dashboard).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The whole system on this machine: a national and a provincial instance federated, their
    /// registries, nodes, backends and audit services, traffic, and a summary with the URLs.
    Demo(demo::DemoArgs),
    /// Keys, the instance CA, certificate requests and certificates, by hand.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// The message log: verify, show, export.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// A node: set it up against its registry.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// The registry of an instance: membership, catalogue, grants, global configuration.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Audit(cmd) => audit::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Log(cmd) => log::run(cmd),
        Command::Node(cmd) => node::run(cmd),
        Command::Pki(cmd) => pki::run(cmd),
        Command::Registry(cmd) => registry::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
