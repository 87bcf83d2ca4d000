//! `keygen DIR`: a throw-away key pair for the client and one for the simulated gateway.

use std::process::ExitCode;

use crate::cli::KeygenArgs;
use crate::output::Printer;

pub fn run(args: KeygenArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    crate::api::keys::keygen(&args.dir)?;
    printer.out_line(&format!(
        "wrote {d}/client_private.pem, {d}/client_public.pem, {d}/alipay_private.pem, {d}/alipay_public.pem \
         (throw-away keys: for the sandbox and tests only)",
        d = args.dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}
