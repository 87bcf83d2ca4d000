//! `keygen DIR`: a throw-away key pair for the client and one for the simulated gateway. Key
//! files already there are refused unless `--force`; private keys are written 0600.

use std::process::ExitCode;

use crate::cli::KeygenArgs;
use crate::output::Printer;

pub fn run(args: KeygenArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    if args.force {
        crate::api::keys::keygen_replacing(&args.dir)?;
    } else {
        crate::api::keys::keygen(&args.dir)?;
    }
    if printer.json_result() {
        let files: Vec<_> = crate::api::keys::KEY_FILES
            .iter()
            .map(|f| args.dir.join(f))
            .collect();
        printer.out_json(&serde_json::json!({"written": files, "throw_away": true}));
        return Ok(ExitCode::SUCCESS);
    }
    printer.out_line(&format!(
        "wrote {d}/client_private.pem, {d}/client_public.pem, {d}/alipay_private.pem, {d}/alipay_public.pem \
         (throw-away keys: for the sandbox and tests only)",
        d = args.dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}
