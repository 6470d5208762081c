//! `lienthong`: the one binary. It parses arguments, reads and writes files, and calls the
//! library crates; the logic lives in those.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod audit;
mod audit_query;
mod demo;
mod files;
mod log;
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
    /// Evidence for auditors: bundle an exchange's proof from the nodes' logs, verify it offline.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Walk through an instance's PKI on this machine: CA, node and member certificates,
    /// a signed message, and pinned mutual TLS between two nodes on loopback.
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
