//! Counter sets listed by name without a detour through `serde_json::Value`:
//! `-v` and the metrics endpoint walk them, JSON serialises them.

/// What a set of counters offers its printers: each counter's name and
/// value, in declaration order. Nested sets prefix their names
/// (`kernel_records_lost`).
pub trait Tally {
    fn for_each_counter(&self, visit: &mut dyn FnMut(&str, u64));
}

/// Declares a `#[derive(Serialize)]` struct of `u64` counters and its
/// [`Tally`], from one list of fields, so that a counter added to the
/// struct cannot be missing from `-v` or the metrics.
macro_rules! counter_set {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident : u64, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: u64, )*
        }

        impl $crate::tally::Tally for $name {
            fn for_each_counter(&self, visit: &mut dyn FnMut(&str, u64)) {
                $( visit(stringify!($field), self.$field); )*
            }
        }
    };
}
pub(crate) use counter_set;

/// Every counter of `tally` as (name, value), names prefixed with
/// `prefix_` when `prefix` is not empty.
pub fn collect(tally: &dyn Tally, prefix: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    tally.for_each_counter(&mut |name, value| {
        let name = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}_{name}")
        };
        out.push((name, value));
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    counter_set! {
        #[derive(Default)]
        pub struct Example {
            /// First.
            pub first: u64,
            pub second: u64,
        }
    }

    #[test]
    fn counters_are_listed_in_declaration_order_with_their_prefix() {
        let example = Example {
            first: 1,
            second: 2,
        };
        assert_eq!(
            collect(&example, "k"),
            [("k_first".to_string(), 1), ("k_second".to_string(), 2)]
        );
    }
}
