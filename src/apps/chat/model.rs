//! What a chat backend looks like to the streaming loop, and the built-in
//! simulated model that needs no upstream.

use std::time::{Duration, Instant};

/// What a backend has after waiting up to the time it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The next piece of the reply, in order.
    Token(String),
    /// Nothing within the wait; ask again.
    Pending,
    /// The reply is complete.
    Done,
    /// The reply cannot go on; the message is shown to the person.
    Failed(String),
}

/// A reply being produced. `next` must return within about `wait` (it may
/// overrun by a bounded connect or write), so the streaming loop can send
/// keepalives, enforce the stall limit and notice a client that left.
pub trait Reply: Send {
    fn next(&mut self, wait: Duration) -> Step;
}

/// Most words of the person's message quoted back in a simulated reply.
const QUOTE_WORDS: usize = 12;
/// Most characters of that quote.
const QUOTE_CHARS: usize = 80;

/// The built-in model: a canned reply of a few dozen words that quotes the
/// message, streamed one word every `interval`, the first at once.
pub struct Simulated {
    tokens: Vec<String>,
    sent: usize,
    next_at: Instant,
    interval: Duration,
}

impl Simulated {
    pub fn new(message: &str, interval: Duration) -> Simulated {
        Simulated {
            tokens: tokens_of(&simulated_reply(message)),
            sent: 0,
            next_at: Instant::now(),
            interval,
        }
    }
}

impl Reply for Simulated {
    fn next(&mut self, wait: Duration) -> Step {
        let Some(token) = self.tokens.get(self.sent) else {
            return Step::Done;
        };
        let now = Instant::now();
        if now < self.next_at {
            let pause = self.next_at - now;
            std::thread::sleep(pause.min(wait));
            if pause > wait {
                return Step::Pending;
            }
        }
        self.sent += 1;
        self.next_at += self.interval;
        Step::Token(token.clone())
    }
}

/// The whole simulated reply to `message` (at least 20 words besides the
/// quote; which of a few wordings depends on the message).
pub fn simulated_reply(message: &str) -> String {
    let quote = quote_of(message);
    let pick = message
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
        % 3;
    match pick {
        0 => format!(
            "You said \u{201c}{quote}\u{201d}. I am forkhorn's built-in simulated model, so I cannot \
             really think about it, but I can stream this reply to you one word at a time while \
             the worker goes on serving other requests."
        ),
        1 => format!(
            "Thanks for your message: \u{201c}{quote}\u{201d}. This answer comes from a small \
             simulated model inside forkhorn. Each word travels as its own Server-Sent Event, so \
             you can watch the reply grow as it is produced."
        ),
        _ => format!(
            "About \u{201c}{quote}\u{201d}: a real language model would have something clever to \
             say here. This one is simulated; it only shows that tokens stream from a detached \
             producer thread straight to your screen."
        ),
    }
}

/// The message as quoted in a reply: whitespace folded, cut to a dozen words.
fn quote_of(message: &str) -> String {
    let words: Vec<&str> = message.split_whitespace().collect();
    let mut quote = words[..words.len().min(QUOTE_WORDS)].join(" ");
    let mut is_cut = words.len() > QUOTE_WORDS;
    if quote.chars().count() > QUOTE_CHARS {
        quote = quote
            .chars()
            .take(QUOTE_CHARS)
            .collect::<String>()
            .trim_end()
            .to_owned();
        is_cut = true;
    }
    if is_cut {
        quote.push('\u{2026}');
    }
    quote
}

/// A reply cut into word tokens the way models stream them: each word after
/// the first carries its leading space, so the tokens concatenate to the text.
fn tokens_of(reply: &str) -> Vec<String> {
    reply
        .split(' ')
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_simulated_reply_quotes_the_message_and_has_at_least_20_other_words() {
        for message in [
            "hi",
            "what is a prefork server?",
            "tell me a story",
            "x y z",
        ] {
            let reply = simulated_reply(message);
            assert!(reply.contains(message), "{reply:?} quotes {message:?}");
            let words = reply.split_whitespace().count() - message.split_whitespace().count();
            assert!(words >= 20, "{reply:?} has only {words} words of its own");
        }
    }

    #[test]
    fn a_long_message_is_quoted_in_part() {
        let message = "word ".repeat(1000);
        let reply = simulated_reply(&message);
        assert!(reply.len() < 400, "{reply:?}");
        assert!(reply.contains("word word\u{2026}"), "{reply:?}");
    }

    #[test]
    fn tokens_concatenate_to_the_reply() {
        let reply = simulated_reply("hello there");
        let tokens = tokens_of(&reply);
        assert!(tokens.len() >= 20);
        assert_eq!(tokens.concat(), reply);
    }

    #[test]
    fn the_simulated_model_streams_every_token_then_is_done() {
        let mut model = Simulated::new("hello", Duration::ZERO);
        let mut text = String::new();
        loop {
            match model.next(Duration::from_millis(10)) {
                Step::Token(t) => text.push_str(&t),
                Step::Done => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(text, simulated_reply("hello"));
    }

    #[test]
    fn the_simulated_model_is_pending_between_slow_tokens() {
        let mut model = Simulated::new("hello", Duration::from_secs(60));
        assert!(matches!(
            model.next(Duration::from_millis(1)),
            Step::Token(_)
        ));
        let started = Instant::now();
        assert_eq!(model.next(Duration::from_millis(20)), Step::Pending);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
