//! `weir new`: a job crate ready to build for wasm32-wasip2.

use std::path::Path;

use anyhow::{bail, Context as _};

const LIB_RS: &str = r#"//! A weir job: counts words in a text file.
//!
//! Build: cargo build --target wasm32-wasip2 --release
//! Run:   weir run target/wasm32-wasip2/release/{crate}.wasm --arg input=FILE --arg output=DIR

use weir::prelude::*;

weir::job!(build);

fn build(env: &mut StreamEnv) -> Result<()> {
    env.set_job_name("{name}");
    env.file_lines(env.arg("input")?)
        .flat_map(|line: String| {
            line.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .key_by(|word: &String| word.clone())
        .process(CountWords)
        .uid("count")
        .sink(Sink::file(env.arg("output")?))
        .uid("sink");
    Ok(())
}

const COUNT: ValueState<u64> = ValueState::new("count", 1);

#[derive(Clone)]
struct CountWords;

impl KeyedProcessFunction for CountWords {
    type Key = String;
    type In = String;
    type Out = (String, u64);
    const STATE: &'static [StateDescriptor] = &[COUNT.descriptor()];

    fn process_element(
        &mut self,
        word: String,
        ctx: &mut Context<'_, '_, String, (String, u64)>,
    ) -> Result<()> {
        let n = ctx.value(&COUNT).get()?.unwrap_or(0) + 1;
        ctx.value(&COUNT).set(&n)?;
        ctx.emit((word, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::Harness;

    #[test]
    fn counts_per_word() {
        let mut h = Harness::new(|words: DataStream<String>| {
            words.key_by(|w: &String| w.clone()).process(CountWords)
        })
        .unwrap();
        for w in ["a", "b", "a"] {
            h.process(w.to_string(), None).unwrap();
        }
        let out: Vec<(String, u64)> = h.take_output().unwrap();
        assert_eq!(out, vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
    }
}
"#;

/// Creates `dir` with a Cargo manifest and a word-count job.
pub fn new_job(dir: &Path, sdk: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("the job name must be a valid directory name")?;
    let crate_name = name.replace('-', "_");
    let sdk = std::fs::canonicalize(sdk)
        .with_context(|| format!("the weir SDK is not at {}", sdk.display()))?;
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n\
             [dependencies]\nweir-sdk = {{ path = {:?} }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\n\
             [workspace]\n",
            sdk.display().to_string()
        ),
    )?;
    std::fs::write(
        dir.join("src/lib.rs"),
        LIB_RS
            .replace("{name}", name)
            .replace("{crate}", &crate_name),
    )?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    Ok(())
}
