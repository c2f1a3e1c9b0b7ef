//! Keys to actions. The help bar and help screen list the same bindings.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::Action;

/// The action a key press stands for; `None` for keys without one (and key releases).
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return match key.code {
            KeyCode::Char('c') | KeyCode::Char('d') => Some(Action::Quit),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') | KeyCode::F(1) => Action::ToggleHelp,
        KeyCode::Esc => Action::Back,
        KeyCode::Char('c') => Action::ToggleCompare,
        KeyCode::Up | KeyCode::Char('k') | KeyCode::BackTab => Action::PrevControl,
        KeyCode::Down | KeyCode::Char('j') | KeyCode::Tab => Action::NextControl,
        KeyCode::Right if key.modifiers.contains(KeyModifiers::SHIFT) => Action::IncreaseMore,
        KeyCode::Left if key.modifiers.contains(KeyModifiers::SHIFT) => Action::DecreaseMore,
        KeyCode::PageUp | KeyCode::Char(']') => Action::IncreaseMore,
        KeyCode::PageDown | KeyCode::Char('[') => Action::DecreaseMore,
        KeyCode::Right | KeyCode::Char('l') | KeyCode::Char('+') | KeyCode::Char('=') => {
            Action::Increase
        }
        KeyCode::Left | KeyCode::Char('h') | KeyCode::Char('-') => Action::Decrease,
        KeyCode::Char(' ') | KeyCode::Char('p') => Action::TogglePause,
        KeyCode::Char('>') | KeyCode::Char('.') => Action::Faster,
        KeyCode::Char('<') | KeyCode::Char(',') => Action::Slower,
        KeyCode::Char('z') => Action::ZoomIn,
        KeyCode::Char('Z') => Action::ZoomOut,
        KeyCode::Char('b') => Action::BusiestHour,
        KeyCode::Char('w') => Action::ToggleDetails,
        KeyCode::Home | KeyCode::Char('g') => Action::Start,
        KeyCode::End | KeyCode::Char('G') => Action::End,
        KeyCode::Char('r') => Action::Reset,
        _ => return None,
    })
}

/// The help screen's rows: keys and what they do.
pub const BINDINGS: [(&str, &str); 14] = [
    ("↑ ↓  k j  Tab", "select a policy control"),
    (
        "← →  h l  - +",
        "change the selected control (the whole trace re-runs)",
    ),
    ("⇧←→  [ ]  PgDn/Up", "change it ten steps at once"),
    ("r", "reset the policy to the command line's"),
    ("space  p", "pause or resume the replay"),
    ("< >  , .", "slow down or speed up the replay"),
    ("z Z", "zoom the charts in or out"),
    ("b", "jump to the busiest hour (most jobs submitted)"),
    ("w", "short terminal: VM-hours and longest waits ⇄ results"),
    (
        "g G  Home End",
        "jump to the start or the end of the replay",
    ),
    ("c", "compare with the reference policies on cost and wait"),
    ("?  F1", "this help"),
    ("Esc", "back to the dashboard"),
    ("q  Ctrl-C", "quit"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> Option<Action> {
        action(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn keys_map_to_actions() {
        assert_eq!(press(KeyCode::Char('q')), Some(Action::Quit));
        assert_eq!(
            action(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(press(KeyCode::Char('c')), Some(Action::ToggleCompare));
        assert_eq!(press(KeyCode::Right), Some(Action::Increase));
        assert_eq!(press(KeyCode::Char('-')), Some(Action::Decrease));
        assert_eq!(
            action(KeyEvent::new(KeyCode::Right, KeyModifiers::SHIFT)),
            Some(Action::IncreaseMore)
        );
        assert_eq!(press(KeyCode::PageDown), Some(Action::DecreaseMore));
        assert_eq!(press(KeyCode::Char(' ')), Some(Action::TogglePause));
        assert_eq!(press(KeyCode::Char('b')), Some(Action::BusiestHour));
        assert_eq!(press(KeyCode::Char('?')), Some(Action::ToggleHelp));
        assert_eq!(press(KeyCode::Char('x')), None);
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(action(release), None);
    }
}
