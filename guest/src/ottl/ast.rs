//! OTTL's syntax tree: what [`grammar`](super::grammar) parses and
//! [`expr`](super::expr) compiles.

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CompareOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

/// A math operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

/// A value expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `nil`
    Nil,
    /// `true` / `false`
    Bool(bool),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A string literal (unescaped).
    Str(String),
    /// A bytes literal.
    Bytes(Vec<u8>),
    /// An upper-case symbol: an enum, or a function name where a function
    /// is expected.
    Enum(String, usize),
    /// A path.
    Path(Path),
    /// A converter call.
    Call(Call),
    /// A list literal.
    List(Vec<Value>),
    /// A map literal.
    Map(Vec<(String, Value)>),
    /// A math expression.
    Math(Box<Value>, MathOp, Box<Value>, usize),
}

/// A path: fields separated by dots, each with optional keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    /// 1-based column of the path's start.
    pub column: usize,
    /// The fields (the first may name a context).
    pub fields: Vec<Field>,
}

/// One field of a path.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The field name.
    pub name: String,
    /// Its keys (`["a"][0]`).
    pub keys: Vec<Key>,
}

/// A key: `["string"]`, `[0]`, or `[expression]` (a path or converter).
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    /// A string key.
    Str(String),
    /// An integer index.
    Int(i64),
    /// A key computed per record.
    Expr(Box<Value>),
}

/// A function call (an editor or a converter).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// 1-based column of the function name.
    pub column: usize,
    /// The function name.
    pub name: String,
    /// The arguments, in order.
    pub args: Vec<Arg>,
    /// Keys indexing the result (converters only).
    pub keys: Vec<Key>,
}

/// An argument, positional or named (`name = value`).
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// The name, for a named argument.
    pub name: Option<String>,
    /// 1-based column of the argument.
    pub column: usize,
    /// The value.
    pub value: Value,
}

/// A boolean expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Any is true.
    Or(Vec<Condition>),
    /// All are true.
    And(Vec<Condition>),
    /// `not …`
    Not(Box<Condition>),
    /// `true` / `false`
    Const(bool),
    /// `left op right`
    Compare(Value, CompareOp, Value),
    /// A converter returning a boolean.
    Call(Call),
}

/// A statement: an editor call with an optional `where` clause.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The editor.
    pub editor: Call,
    /// The `where` condition.
    pub condition: Option<Condition>,
}
