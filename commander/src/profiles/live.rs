//! Profiles that can be reloaded while the Commander runs (SIGHUP): every
//! reader takes the current set; a reload that fails keeps the old one.

use std::sync::{Arc, RwLock};

use wharf_runtime::ConfigError;

use super::Profiles;

type Loader = dyn Fn() -> Result<Profiles, ConfigError> + Send + Sync;

/// The current profiles and how to load them again.
#[derive(Clone)]
pub struct LiveProfiles {
    current: Arc<RwLock<Arc<Profiles>>>,
    load: Arc<Loader>,
}

impl LiveProfiles {
    /// Loads the profiles with `load`, which [`LiveProfiles::reload`] calls again.
    pub fn new(
        load: impl Fn() -> Result<Profiles, ConfigError> + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        Ok(Self::loaded(load()?, load))
    }

    /// Starts from `profiles`, loaded already (by the configuration's
    /// check); `load` is what [`LiveProfiles::reload`] calls.
    pub fn loaded(
        profiles: Profiles,
        load: impl Fn() -> Result<Profiles, ConfigError> + Send + Sync + 'static,
    ) -> Self {
        LiveProfiles {
            current: Arc::new(RwLock::new(Arc::new(profiles))),
            load: Arc::new(load),
        }
    }

    /// The profiles in force now.
    pub fn current(&self) -> Arc<Profiles> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Loads the profiles again; on problems the current ones stay.
    pub fn reload(&self) -> Result<usize, ConfigError> {
        let profiles = (self.load)()?;
        let models = profiles.len();
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(profiles);
        Ok(models)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_failed_reload_keeps_the_profiles_in_force() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let live = LiveProfiles::new(move || match counter.fetch_add(1, Ordering::SeqCst) {
            0 => Profiles::from_sources(&[("a".into(), "model = \"a\"".into())]),
            1 => Err(ConfigError {
                problems: vec!["b.toml: broken".into()],
            }),
            _ => Profiles::from_sources(&[
                ("a".into(), "model = \"a\"".into()),
                ("b".into(), "model = \"b\"".into()),
            ]),
        })
        .unwrap();
        assert_eq!(live.current().len(), 1);
        assert_eq!(live.reload().unwrap_err().problems, ["b.toml: broken"]);
        assert!(live.current().knows_model("a"), "kept");
        assert_eq!(live.reload().unwrap(), 2);
        assert!(live.current().knows_model("b"));
    }
}
