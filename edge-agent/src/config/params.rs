//! One way to declare a table of rule parameters: each parameter once,
//! with its type, its valid range and its meaning (and, where the table has
//! one set of defaults, its default). From that one list come the table,
//! its all-optional overrides (per camera, per kind), the merge and the
//! range checks, so the four can never drift apart. Checks between
//! parameters (`k` ≤ `n`) stay beside the table that needs them.

/// Parameter values as numbers, for the range checks.
pub(super) trait Num {
    fn num(self) -> f64;
}
impl Num for f64 {
    fn num(self) -> f64 {
        self
    }
}
impl Num for f32 {
    fn num(self) -> f64 {
        self as f64
    }
}
impl Num for u32 {
    fn num(self) -> f64 {
        self as f64
    }
}
impl Num for bool {
    fn num(self) -> f64 {
        self as u8 as f64
    }
}

/// `rule_params! { defaults; <table>; <overrides>; name: type = default, min, max; … }`
/// or, when the defaults come from elsewhere (fire's rules differ by kind),
/// `rule_params! { no_defaults; <table>; <overrides>; name: type, min, max; … }`.
macro_rules! rule_params {
    (
        defaults;
        $(#[$tm:meta])* $vis:vis struct $table:ident;
        $(#[$om:meta])* $ovis:vis struct $over:ident;
        $( $(#[doc = $doc:expr])* $name:ident : $ty:ty = $default:expr, $min:expr, $max:expr; )*
    ) => {
        $crate::config::params::rule_params! {
            no_defaults;
            $(#[$tm])* $vis struct $table;
            $(#[$om])* $ovis struct $over;
            $( $(#[doc = $doc])* $name: $ty, $min, $max; )*
        }

        impl Default for $table {
            fn default() -> Self {
                $table { $( $name: $default, )* }
            }
        }
    };
    (
        no_defaults;
        $(#[$tm:meta])* $vis:vis struct $table:ident;
        $(#[$om:meta])* $ovis:vis struct $over:ident;
        $( $(#[doc = $doc:expr])* $name:ident : $ty:ty, $min:expr, $max:expr; )*
    ) => {
        $(#[$tm])*
        $vis struct $table {
            $( $(#[doc = $doc])* $vis $name: $ty, )*
        }

        $(#[$om])*
        #[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        $ovis struct $over {
            $( $ovis $name: Option<$ty>, )*
        }

        impl $over {
            /// `base` with every key set here replaced.
            $ovis fn apply(&self, base: &$table) -> $table {
                $table { $( $name: self.$name.unwrap_or(base.$name), )* }
            }
        }

        impl $table {
            /// Range checks; `at` is the table's key path for messages.
            $vis fn validate(&self, at: &str) -> Result<(), (String, String)> {
                use $crate::config::params::Num;
                $(
                    let v = Num::num(self.$name);
                    if !(v.is_finite() && v >= $min as f64 && v <= $max as f64) {
                        return Err((
                            format!("{at}.{}", stringify!($name)),
                            format!("{} is outside {}–{}", self.$name, $min, $max),
                        ));
                    }
                )*
                Ok(())
            }
        }
    };
}

pub(crate) use rule_params;
