//! One function binary in its own process, started with the environment Lambda gives a custom
//! runtime and pointed at its own [`RuntimeApi`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::process::{Child, Command};

use crate::runtime_api::{InvokeError, Outcome, RuntimeApi};

/// A running function. Dropping it kills the process and stops its Runtime API.
pub struct Function {
    name: String,
    api: RuntimeApi,
    child: Child,
    log: PathBuf,
}

impl Function {
    /// Starts `binary` as function `name` with only `env` plus the variables Lambda sets for every
    /// function (`AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`, memory size, version, log
    /// group and stream, `_HANDLER`, `LAMBDA_TASK_ROOT`): nothing leaks in from the caller's
    /// environment. Standard output and error go to a log file ([`Function::log`]).
    pub async fn spawn<'a>(
        binary: &Path,
        name: &str,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> std::io::Result<Self> {
        let api = RuntimeApi::start(name).await?;
        let log = std::env::temp_dir().join(format!("corebank-lambda-{name}-{}.log", uuid::Uuid::new_v4()));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let task_root = binary.parent().unwrap_or(binary);
        let child = Command::new(binary)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", api.address().to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("_HANDLER", "bootstrap")
            .env("LAMBDA_TASK_ROOT", task_root)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { name: name.to_owned(), api, child, log })
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Invokes the function with `payload` and waits at most `timeout` for its answer; a process that
    /// exits first fails the invocation at once.
    pub async fn invoke(
        &mut self,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Outcome, InvokeError> {
        tokio::select! {
            outcome = self.api.invoke(payload, timeout) => outcome,
            status = self.child.wait() => Err(InvokeError::Exited(
                status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            )),
        }
    }

    /// What the process has written to standard output and error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_that_exits_fails_its_invocation_at_once() {
        let mut function = Function::spawn(Path::new("/bin/true"), "exits", []).await.unwrap();
        let outcome = function.invoke("{}", Duration::from_secs(60)).await;
        assert!(matches!(outcome, Err(InvokeError::Exited(_))), "{outcome:?}");
    }
}
