//! The interactive dashboard: `app` holds the state, `ui` draws it, `event` maps keys.

mod app;
mod event;
mod ui;

#[cfg(test)]
mod advised_tests;
#[cfg(test)]
mod tests;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crossterm::event::{Event, poll, read};

use crate::cli::Args;
use crate::setup::{setup, trace};
use app::App;

/// How often the replay moves on when no key is pressed.
const FRAME: Duration = Duration::from_millis(100);

const NOT_A_TERMINAL: &str =
    "stdout is not a terminal: use --headless (e.g. `simulate --headless --format table`)";

/// Gives the terminal back when dropped, on every way out of the loop. A panic is restored
/// by the hook `ratatui::try_init` installs, before the message is printed; leaving the
/// alternate screen a second time would move the cursor back over that message.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            ratatui::restore();
        }
    }
}

pub fn main(args: &Args) -> ExitCode {
    if !std::io::stdout().is_terminal() {
        eprintln!("{NOT_A_TERMINAL}");
        return ExitCode::from(2);
    }
    let app = match trace(args)
        .and_then(|(trace, what)| Ok((trace, what, setup(args)?)))
        .map_err(|e| e.to_string())
        .and_then(|(trace, what, setup)| {
            // A four-week trace takes a moment in a debug build; say what is happening.
            eprintln!("replaying {} jobs ({what})…", trace.jobs.len());
            App::new(trace, what, setup).map_err(|e| e.to_string())
        }) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match interact(app) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the terminal failed: {e}");
            ExitCode::from(1)
        }
    }
}

fn interact(mut app: App) -> std::io::Result<()> {
    // Before `try_init`: it can fail after turning raw mode on.
    let _restore = Restore;
    let mut terminal = ratatui::try_init()?;
    let mut last = Instant::now();
    while !app.quit {
        terminal.draw(|frame| app.render(frame))?;
        if poll(FRAME)? {
            // Take every key already queued before re-running, so a held key runs once.
            loop {
                if let Event::Key(key) = read()?
                    && let Some(action) = event::action(key)
                {
                    app.handle(action);
                }
                if app.quit || !poll(Duration::ZERO)? {
                    break;
                }
            }
            if app.pending() || app.view == app::View::Compare {
                terminal.draw(|frame| app.render(frame))?;
            }
            let rerun = Instant::now();
            app.refresh();
            // The replay stands still while the trace re-runs.
            last += rerun.elapsed();
        }
        let now = Instant::now();
        app.advance(now - last);
        last = now;
    }
    Ok(())
}
