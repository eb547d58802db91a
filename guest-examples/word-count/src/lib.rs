//! Word count: lines of text → words → running count per word.
//!
//! `weir run word_count.wasm --arg input=FILE --arg output=DIR` writes
//! `{"word": w, "count": n}` updates; the last update per word is its total.

use serde::{Deserialize, Serialize};
use weir::prelude::*;

weir::job!(build);

/// One update of a word's count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordCount {
    pub word: String,
    pub count: u64,
}

/// Maximal runs of alphanumeric characters, lowercased.
pub fn words(line: &str) -> Vec<String> {
    line.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

pub fn build(env: &mut StreamEnv) -> Result<()> {
    env.set_job_name("word-count");
    env.file_lines(env.arg("input")?)
        .uid("lines")
        .flat_map(|line: String| words(&line))
        .uid("split")
        .key_by(|w: &String| w.clone())
        .process(CountWords)
        .uid("count")
        .sink(Sink::file(env.arg("output")?))
        .uid("sink");
    Ok(())
}

const COUNT: ValueState<u64> = ValueState::new("count", 1);

/// Keeps each word's count in value state.
#[derive(Clone)]
pub struct CountWords;

impl KeyedProcessFunction for CountWords {
    type Key = String;
    type In = String;
    type Out = WordCount;
    const STATE: &'static [StateDescriptor] = &[COUNT.descriptor()];

    fn process_element(
        &mut self,
        word: String,
        ctx: &mut Context<'_, '_, String, WordCount>,
    ) -> Result<()> {
        let count = ctx.value(&COUNT).get()?.unwrap_or(0) + 1;
        ctx.value(&COUNT).set(&count)?;
        ctx.emit(WordCount { word, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir::testing::Harness;

    #[test]
    fn words_are_lowercased_alphanumeric_runs() {
        assert_eq!(
            words("Hello, wörld! x2 ÉTÉ--a"),
            ["hello", "wörld", "x2", "été", "a"]
        );
    }

    #[test]
    fn counts_accumulate_per_word() {
        let mut h = Harness::new(|words: DataStream<String>| {
            words.key_by(|w: &String| w.clone()).process(CountWords)
        })
        .unwrap();
        for w in words("a b a") {
            h.process(w, None).unwrap();
        }
        let out: Vec<WordCount> = h.take_output().unwrap();
        let counts: Vec<_> = out.iter().map(|w| (w.word.as_str(), w.count)).collect();
        assert_eq!(counts, [("a", 1), ("b", 1), ("a", 2)]);
        assert_eq!(h.value_state(&"a".to_string(), &COUNT).unwrap(), Some(2));
    }
}
