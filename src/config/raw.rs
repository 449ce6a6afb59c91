//! The TOML file as written: serde structs with `deny_unknown_fields`, and value types that read
//! durations, sizes, vCPU counts, percentages and inline secrets. Nothing here is validated
//! beyond its type; `validate.rs` turns these into the typed config.
//!
//! These structs deliberately do not implement `Debug`: some hold secrets.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::secret::Secret;
use crate::units;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub state_dir: Option<PathBuf>,
    pub metrics_file: Option<PathBuf>,
    pub history: Option<RawHistory>,
    #[serde(default)]
    pub cluster: Vec<RawCluster>,
    pub select: Option<RawSelect>,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub host: RawHost,
    #[serde(default, rename = "override")]
    pub overrides: Vec<RawOverride>,
    #[serde(default)]
    pub schedule: Vec<RawSchedule>,
    pub notify: Option<super::notify::RawNotify>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    pub max_size: Option<Mib>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub fallback_urls: Vec<String>,
    pub token: Option<String>,
    pub token_secret_file: Option<PathBuf>,
    pub token_secret: Option<InlineSecret>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password: Option<InlineSecret>,
    pub ca_file: Option<PathBuf>,
    pub fingerprint: Option<String>,
    pub insecure: Option<bool>,
    pub timeout: Option<Dur>,
    pub connect_timeout: Option<Dur>,
    pub task_timeout: Option<Dur>,
    pub active: Option<String>,
    pub local_node: Option<String>,
    pub proxy: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSelect {
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub vmids: Vec<u32>,
    #[serde(default)]
    pub pools: Vec<String>,
    #[serde(default)]
    pub exclude_tags: Vec<String>,
    #[serde(default)]
    pub exclude_vmids: Vec<u32>,
    /// `["vm"]`, `["ct"]` or both; absent = VMs only.
    pub types: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub window: Option<Dur>,
    pub min_samples: Option<u32>,
    pub memory_margin: Option<Percent>,
    pub backoff: Option<Dur>,
    pub stale_after: Option<Dur>,
    #[serde(default)]
    pub cpu: RawResource<Vcpus>,
    #[serde(default)]
    pub memory: RawResource<Mib>,
}

/// `[policy.cpu]`, `[policy.memory]`, and the `cpu = {...}` / `memory = {...}` of an override:
/// every key optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResource<A> {
    pub enabled: Option<bool>,
    pub scale_up: Option<bool>,
    pub scale_down: Option<bool>,
    pub high: Option<Percent>,
    pub low: Option<Percent>,
    pub target: Option<Percent>,
    pub min: Option<A>,
    pub max: Option<A>,
    pub up_after: Option<Dur>,
    pub down_after: Option<Dur>,
    pub cooldown_up: Option<Dur>,
    pub cooldown_down: Option<Dur>,
    pub max_step_up: Option<A>,
    pub max_step_down: Option<A>,
    pub saturated_factor: Option<f64>,
}

impl<A> Default for RawResource<A> {
    fn default() -> Self {
        RawResource {
            enabled: None,
            scale_up: None,
            scale_down: None,
            high: None,
            low: None,
            target: None,
            min: None,
            max: None,
            up_after: None,
            down_after: None,
            cooldown_up: None,
            cooldown_down: None,
            max_step_up: None,
            max_step_down: None,
            saturated_factor: None,
        }
    }
}

impl<A> RawResource<A> {
    pub fn is_empty(&self) -> bool {
        self.enabled.is_none()
            && self.scale_up.is_none()
            && self.scale_down.is_none()
            && self.high.is_none()
            && self.low.is_none()
            && self.target.is_none()
            && self.min.is_none()
            && self.max.is_none()
            && self.up_after.is_none()
            && self.down_after.is_none()
            && self.cooldown_up.is_none()
            && self.cooldown_down.is_none()
            && self.max_step_up.is_none()
            && self.max_step_down.is_none()
            && self.saturated_factor.is_none()
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub max_memory: Option<Percent>,
    pub max_cpu: Option<Percent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverride {
    #[serde(default)]
    pub vmids: Vec<u32>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub pools: Vec<String>,
    /// Only guests of these types (`vm`, `ct`); alone, every guest of those types.
    pub types: Option<Vec<String>>,
    #[serde(default)]
    pub cpu: RawResource<Vcpus>,
    #[serde(default)]
    pub memory: RawResource<Mib>,
}

/// One `[[schedule]]`: a window in the week and what it does to the VMs it selects.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub name: Option<String>,
    pub when: Option<OneOrMany>,
    pub timezone: Option<String>,
    #[serde(default)]
    pub vmids: Vec<u32>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub pools: Vec<String>,
    pub freeze: Option<String>,
    pub floor: Option<RawFloor>,
}

/// `floor = { cpu = 4, memory = "8GiB" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFloor {
    pub cpu: Option<Vcpus>,
    pub memory: Option<Mib>,
}

/// A string, or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

/// A duration string (`"90s"`, `"1h30m"`), read with [`units::parse_duration`].
#[derive(Clone, Copy)]
pub(super) struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"90s\", \"5m\" or \"1h30m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                units::parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "a duration needs a unit and quotes: \"{v}s\" or \"{v}m\", not {v}"
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "a duration needs a unit and quotes: \"{v}s\" or \"{v}m\", not {v}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A memory size in MiB: a TOML integer (MiB) or a size string (`"4GiB"`, `"1.5GiB"`).
#[derive(Clone, Copy)]
pub(super) struct Mib(pub u64);

impl<'de> Deserialize<'de> for Mib {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Mib;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"4GiB\" or \"512MiB\", or an integer in MiB")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mib, E> {
                units::parse_size(v).map(Mib).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Mib, E> {
                u64::try_from(v)
                    .map(Mib)
                    .map_err(|_| E::custom(format!("a size can not be negative ({v})")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Mib, E> {
                Ok(Mib(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Mib, E> {
                Err(E::custom(format!(
                    "a bare number is whole MiB; for fractions write a string such as \"{v}GiB\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A vCPU count: a TOML integer.
#[derive(Clone, Copy)]
pub(super) struct Vcpus(pub u64);

impl<'de> Deserialize<'de> for Vcpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Vcpus;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number of vCPUs such as 4 (no quotes)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vcpus, E> {
                u64::try_from(v)
                    .map(Vcpus)
                    .map_err(|_| E::custom(format!("a vCPU count can not be negative ({v})")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vcpus, E> {
                Ok(Vcpus(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A percentage: a TOML integer or float (`80`, `87.5`). The range is checked by validation.
#[derive(Clone, Copy)]
pub(super) struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a percentage as a number such as 80 or 87.5 (no quotes, no %)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Percent, E> {
                Ok(Percent(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Percent, E> {
                Ok(Percent(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percent, E> {
                Ok(Percent(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// An inline secret (`token_secret`, `password`). Any error about it never quotes the value.
pub(super) struct InlineSecret(pub Secret);

impl<'de> Deserialize<'de> for InlineSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WRONG: &str = "a secret must be a string in quotes (value not shown)";
        impl<'v> Visitor<'v> for V {
            type Value = InlineSecret;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InlineSecret, E> {
                Ok(InlineSecret(Secret::new(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<InlineSecret, E> {
                Err(E::custom(WRONG))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<InlineSecret, E> {
                Err(E::custom(WRONG))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<InlineSecret, E> {
                Err(E::custom(WRONG))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<InlineSecret, E> {
                Err(E::custom(WRONG))
            }
            fn visit_map<M: de::MapAccess<'v>>(self, _: M) -> Result<InlineSecret, M::Error> {
                Err(de::Error::custom(WRONG))
            }
            fn visit_seq<S: de::SeqAccess<'v>>(self, _: S) -> Result<InlineSecret, S::Error> {
                Err(de::Error::custom(WRONG))
            }
        }
        d.deserialize_any(V)
    }
}
