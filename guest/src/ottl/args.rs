//! Binding a call's arguments (positional or `name = value`) to a
//! function's parameters, and reading literal arguments the Collector's
//! functions take as plain Go values (patterns, keys, limits).

use super::CompileError;
use super::expr::{Compiler, Expr};
use super::grammar::{Arg, Call, Value};

/// A function passed by name (`replace_pattern(..., SHA256)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashFn {
    /// `SHA256`
    Sha256,
    /// `SHA512`
    Sha512,
    /// `SHA1`
    Sha1,
    /// `MD5`
    Md5,
}

impl HashFn {
    /// The function a name refers to.
    pub fn parse(name: &str) -> Option<HashFn> {
        match name {
            "SHA256" => Some(HashFn::Sha256),
            "SHA512" => Some(HashFn::Sha512),
            "SHA1" => Some(HashFn::Sha1),
            "MD5" => Some(HashFn::Md5),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            HashFn::Sha256 => "SHA256",
            HashFn::Sha512 => "SHA512",
            HashFn::Sha1 => "SHA1",
            HashFn::Md5 => "MD5",
        }
    }
}

/// A call's arguments in parameter order.
pub struct Args<'c> {
    call: &'c Call,
    params: &'c [&'c str],
    bound: Vec<Option<&'c Arg>>,
}

/// `replacementFormat`, `replacement_format` and `replacementformat` name
/// the same parameter.
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect::<String>();
    norm(a) == norm(b)
}

impl<'c> Args<'c> {
    /// Binds `call`'s arguments to `params`, the first `required` of which
    /// must be given.
    pub fn bind(call: &'c Call, params: &'c [&'c str], required: usize) -> Result<Args<'c>, CompileError> {
        let mut bound: Vec<Option<&Arg>> = vec![None; params.len()];
        for (i, arg) in call.args.iter().enumerate() {
            let at = match &arg.name {
                None if i < params.len() => i,
                None => {
                    return Err(CompileError::at(
                        arg.column,
                        format!(
                            "{} takes at most {} arguments ({}), got {}",
                            call.name,
                            params.len(),
                            params.join(", "),
                            call.args.len()
                        ),
                    ));
                }
                Some(name) => params.iter().position(|p| same_name(p, name)).ok_or_else(|| {
                    CompileError::at(
                        arg.column,
                        format!("{} has no parameter {name:?}; its parameters: {}", call.name, params.join(", ")),
                    )
                })?,
            };
            if bound[at].is_some() {
                return Err(CompileError::at(arg.column, format!("{}: {} is given twice", call.name, params[at])));
            }
            bound[at] = Some(arg);
        }
        if let Some(missing) = (0..required).find(|i| bound[*i].is_none()) {
            return Err(CompileError::at(
                call.column,
                format!(
                    "{} needs {} argument{} ({}); {} is missing",
                    call.name,
                    required,
                    if required == 1 { "" } else { "s" },
                    params[..required].join(", "),
                    params[missing]
                ),
            ));
        }
        Ok(Args { call, params, bound })
    }

    /// The argument for parameter `i`, if given.
    pub fn get(&self, i: usize) -> Option<&'c Arg> {
        self.bound[i]
    }

    /// An error at argument `i` (or the call when it is absent).
    pub fn error(&self, i: usize, message: String) -> CompileError {
        let column = self.bound[i].map_or(self.call.column, |a| a.column);
        CompileError::at(column, format!("{} {}: {message}", self.call.name, self.params[i]))
    }

    fn required(&self, i: usize) -> &'c Arg {
        self.bound[i].expect("required arguments are checked by bind")
    }

    /// Parameter `i` as an expression.
    pub fn expr(&self, c: &Compiler, i: usize) -> Result<Expr, CompileError> {
        c.expr(&self.required(i).value)
    }

    /// Optional parameter `i` as an expression.
    pub fn opt_expr(&self, c: &Compiler, i: usize) -> Result<Option<Expr>, CompileError> {
        self.bound[i].map(|a| c.expr(&a.value)).transpose()
    }

    /// Parameter `i`, which must be a string literal.
    pub fn string_literal(&self, i: usize) -> Result<String, CompileError> {
        match &self.required(i).value {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(self.error(i, "must be a string literal".into())),
        }
    }

    /// Parameter `i`, which must be an int literal.
    pub fn int_literal(&self, i: usize) -> Result<i64, CompileError> {
        match &self.required(i).value {
            Value::Int(n) => Ok(*n),
            _ => Err(self.error(i, "must be an int literal".into())),
        }
    }

    /// Parameter `i`, which must be a boolean literal.
    pub fn bool_literal(&self, i: usize) -> Result<bool, CompileError> {
        match &self.required(i).value {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.error(i, "must be true or false".into())),
        }
    }

    /// Parameter `i`, which must be a list of string literals.
    pub fn string_list_literal(&self, i: usize) -> Result<Vec<String>, CompileError> {
        match &self.required(i).value {
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Str(s) => Ok(s.clone()),
                    _ => Err(self.error(i, "must be a list of string literals".into())),
                })
                .collect(),
            _ => Err(self.error(i, "must be a list of string literals, e.g. [\"a\", \"b\"]".into())),
        }
    }

    /// Optional parameter `i`, a function name (`SHA256`).
    pub fn function(&self, i: usize) -> Result<Option<HashFn>, CompileError> {
        let Some(arg) = self.bound[i] else { return Ok(None) };
        match &arg.value {
            Value::Enum(name, _) => HashFn::parse(name).map(Some).ok_or_else(|| {
                self.error(i, format!("{name} is not a function this build can apply; use SHA256, SHA512, SHA1 or MD5"))
            }),
            _ => Err(self.error(i, "must name a function, e.g. SHA256".into())),
        }
    }
}
