//! The calculator service (schemas/calculator.capnp), shared by the `calc`
//! example and the tests, and the client-side checks that exercise it.
//!
//! The server code is written against the generated traits only: where it
//! needs to host a new capability (a `Value` that `evaluate` returns, a
//! `Function` from `defFunction` or `getOperator`), it asks a [`Host`]. With
//! [`ActixHost`] the capabilities are actors of our runtime; the tests give
//! it a host that uses `capnp_rpc::new_client`, so that the very same
//! service also runs on the capnp-rpc crate (and the same client checks run
//! from a capnp-rpc vat).

use std::rc::Rc;

use capnp::capability::FromServer;
use capnp::message::HeapAllocator;
use capnp::traits::{Imbue, ImbueMut};
use capnp_actix::schemas::calculator_capnp::calculator::{
    self, expression, function, value, Operator,
};
use capnp_actix::Cap;
use futures::future::{try_join_all, LocalBoxFuture};

/// Where new capabilities live: the runtime that hosts a server value.
pub trait Host: Clone + 'static {
    /// Hosts `server` and returns its generated client.
    fn host<C, S>(&self, server: S) -> C
    where
        C: FromServer<S>;
}

/// Hosts capabilities as capnp-actix actors ([`Cap::new`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct ActixHost;

impl Host for ActixHost {
    fn host<C, S>(&self, server: S) -> C
    where
        C: FromServer<S>,
    {
        Cap::<C>::new(server).client()
    }
}

fn failed(reason: impl Into<String>) -> capnp::Error {
    capnp::Error::failed(reason.into())
}

/// The arguments an expression is evaluated with: `None` at the top level
/// of `evaluate`, where `parameter` means nothing.
type Args<'a> = Option<&'a [f64]>;

/// Evaluates `expr`. The arguments of a `call` are evaluated concurrently
/// (their calls are all in flight at once), then the function is called.
fn eval<'a>(
    expr: expression::Reader<'a>,
    args: Args<'a>,
) -> LocalBoxFuture<'a, capnp::Result<f64>> {
    Box::pin(async move {
        match expr.which()? {
            expression::Literal(x) => Ok(x),
            expression::PreviousResult(v) => {
                let response = v?.read_request().send().promise.await?;
                Ok(response.get()?.get_value())
            }
            expression::Parameter(index) => match args {
                None => Err(failed(format!(
                    "parameter {index} used outside a function body"
                ))),
                Some(args) => args.get(index as usize).copied().ok_or_else(|| {
                    failed(format!(
                        "parameter {index} is out of range: the function has {} parameter(s)",
                        args.len()
                    ))
                }),
            },
            expression::Call(call) => {
                let func = call.get_function()?;
                let params = call.get_params()?;
                let values = try_join_all(params.iter().map(|p| eval(p, args))).await?;
                call_function(&func, &values).await
            }
        }
    })
}

/// Calls `func` with `values` and returns its result.
async fn call_function(func: &function::Client, values: &[f64]) -> capnp::Result<f64> {
    let mut request = func.call_request();
    {
        let mut list = request.get().init_params(values.len() as u32);
        for (i, v) in values.iter().enumerate() {
            list.set(i as u32, *v);
        }
    }
    let response = request.send().promise.await?;
    Ok(response.get()?.get_value())
}

/// The numbers a `Function` was called with.
fn read_params(params: function::CallParams) -> capnp::Result<Vec<f64>> {
    Ok(params.get()?.get_params()?.iter().collect())
}

/// The calculator: evaluates expressions, defines functions and hands out
/// the four arithmetic operators.
pub struct Calculator<H: Host = ActixHost> {
    host: H,
}

impl Calculator<ActixHost> {
    /// A calculator whose values and functions are capnp-actix actors.
    pub fn new() -> Self {
        Calculator { host: ActixHost }
    }
}

impl Default for Calculator<ActixHost> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Host> Calculator<H> {
    /// A calculator that hosts its values and functions with `host`.
    pub fn with_host(host: H) -> Self {
        Calculator { host }
    }
}

impl<H: Host> calculator::Server for Calculator<H> {
    async fn evaluate(
        self: Rc<Self>,
        params: calculator::EvaluateParams,
        mut results: calculator::EvaluateResults,
    ) -> Result<(), capnp::Error> {
        let expr = params.get()?.get_expression()?;
        let value = eval(expr, None).await?;
        results.get().set_value(self.host.host(ValueImpl { value }));
        Ok(())
    }

    async fn def_function(
        self: Rc<Self>,
        params: calculator::DefFunctionParams,
        mut results: calculator::DefFunctionResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let count = p.get_param_count();
        let param_count = u32::try_from(count).map_err(|_| {
            failed(format!(
                "defFunction: paramCount must not be negative (got {count})"
            ))
        })?;
        let func = FunctionImpl::new(param_count, p.get_body()?)?;
        results.get().set_func(self.host.host(func));
        Ok(())
    }

    async fn get_operator(
        self: Rc<Self>,
        params: calculator::GetOperatorParams,
        mut results: calculator::GetOperatorResults,
    ) -> Result<(), capnp::Error> {
        let op = params
            .get()?
            .get_op()
            .map_err(|e| failed(format!("getOperator: unknown operator (enumerant {})", e.0)))?;
        results.get().set_func(self.host.host(OperatorImpl { op }));
        Ok(())
    }
}

/// A computed number.
pub struct ValueImpl {
    /// The number `read` returns.
    pub value: f64,
}

impl value::Server for ValueImpl {
    async fn read(
        self: Rc<Self>,
        _: value::ReadParams,
        mut results: value::ReadResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_value(self.value);
        Ok(())
    }
}

/// One of the built-in binary operators.
pub struct OperatorImpl {
    /// Which one.
    pub op: Operator,
}

impl OperatorImpl {
    fn name(&self) -> &'static str {
        match self.op {
            Operator::Add => "add",
            Operator::Subtract => "subtract",
            Operator::Multiply => "multiply",
            Operator::Divide => "divide",
        }
    }
}

impl function::Server for OperatorImpl {
    async fn call(
        self: Rc<Self>,
        params: function::CallParams,
        mut results: function::CallResults,
    ) -> Result<(), capnp::Error> {
        let args = read_params(params)?;
        let [a, b] = args[..] else {
            return Err(failed(format!(
                "operator {} takes exactly 2 parameters, got {}",
                self.name(),
                args.len()
            )));
        };
        let value = match self.op {
            Operator::Add => a + b,
            Operator::Subtract => a - b,
            Operator::Multiply => a * b,
            Operator::Divide => a / b,
        };
        results.get().set_value(value);
        Ok(())
    }
}

/// The capability table of a message we keep: the capabilities an
/// expression refers to (functions, previous results).
type CapTable = Vec<Option<Box<dyn capnp::private::capability::ClientHook>>>;

/// A function defined with `defFunction`: its body is kept as our own copy
/// of the expression (with the capabilities it refers to) and evaluated on
/// every call.
pub struct FunctionImpl {
    param_count: u32,
    body: capnp::message::Builder<HeapAllocator>,
    caps: CapTable,
}

impl FunctionImpl {
    /// Copies `body` (which may refer to capabilities) out of the request.
    pub fn new(param_count: u32, body: expression::Reader<'_>) -> capnp::Result<Self> {
        let mut message = capnp::message::Builder::new_default();
        let mut caps = CapTable::new();
        {
            let mut root: capnp::any_pointer::Builder = message.get_root()?;
            root.imbue_mut(&mut caps);
            root.set_as(body)?;
        }
        Ok(FunctionImpl {
            param_count,
            body: message,
            caps,
        })
    }

    fn body(&self) -> capnp::Result<expression::Reader<'_>> {
        let mut root: capnp::any_pointer::Reader = self.body.get_root_as_reader()?;
        root.imbue(&self.caps);
        root.get_as()
    }
}

impl function::Server for FunctionImpl {
    async fn call(
        self: Rc<Self>,
        params: function::CallParams,
        mut results: function::CallResults,
    ) -> Result<(), capnp::Error> {
        let args = read_params(params)?;
        if args.len() != self.param_count as usize {
            return Err(failed(format!(
                "function takes {} parameter(s), got {}",
                self.param_count,
                args.len()
            )));
        }
        let value = eval(self.body()?, Some(&args)).await?;
        results.get().set_value(value);
        Ok(())
    }
}

/// The client side: the checks the classic sample client makes, for any
/// runtime's `calculator::Client`.
pub mod client {
    use super::{ActixHost, Host};
    use std::rc::Rc;

    use capnp_actix::schemas::calculator_capnp::calculator::{
        self, expression, function, value, Operator,
    };

    /// How far a result may be from the expected value.
    pub const TOLERANCE: f64 = 1e-9;

    /// An expression to send, built on the client.
    #[derive(Clone)]
    pub enum Expr {
        /// A number.
        Lit(f64),
        /// The value of an earlier `evaluate` (possibly still unanswered).
        Prev(value::Client),
        /// A parameter of the function whose body this is.
        Param(u32),
        /// A function applied to arguments.
        Call(function::Client, Vec<Expr>),
    }

    /// `func(args...)`.
    pub fn call(func: &function::Client, args: impl IntoIterator<Item = Expr>) -> Expr {
        Expr::Call(func.clone(), args.into_iter().collect())
    }

    impl Expr {
        /// Writes the expression into a message being built.
        pub fn write(&self, mut b: expression::Builder<'_>) {
            match self {
                Expr::Lit(x) => b.set_literal(*x),
                Expr::Prev(v) => b.set_previous_result(v.clone()),
                Expr::Param(i) => b.set_parameter(*i),
                Expr::Call(f, args) => {
                    let mut c = b.init_call();
                    c.set_function(f.clone());
                    let mut list = c.init_params(args.len() as u32);
                    for (i, a) in args.iter().enumerate() {
                        a.write(list.reborrow().get(i as u32));
                    }
                }
            }
        }
    }

    /// Asks for a built-in operator; the answer is not awaited (the
    /// returned client is a pipelined promise).
    pub fn operator(calc: &calculator::Client, op: Operator) -> function::Client {
        let mut request = calc.get_operator_request();
        request.get().set_op(op);
        request.send().pipeline.get_func()
    }

    /// Sends `evaluate(expr)` and returns the (pipelined) `Value`.
    pub fn evaluate(calc: &calculator::Client, expr: &Expr) -> value::Client {
        let mut request = calc.evaluate_request();
        expr.write(request.get().init_expression());
        request.send().pipeline.get_value()
    }

    /// Sends `defFunction(paramCount, body)` and returns the (pipelined)
    /// function.
    pub fn def_function(
        calc: &calculator::Client,
        param_count: i32,
        body: &Expr,
    ) -> function::Client {
        let mut request = calc.def_function_request();
        request.get().set_param_count(param_count);
        body.write(request.get().init_body());
        request.send().pipeline.get_func()
    }

    /// Reads a value.
    pub async fn read(value: &value::Client) -> capnp::Result<f64> {
        let response = value.read_request().send().promise.await?;
        Ok(response.get()?.get_value())
    }

    /// Checks that `got` is `want` for the check `name`.
    pub fn expect(name: &str, got: f64, want: f64) -> capnp::Result<(String, f64)> {
        if (got - want).abs() <= TOLERANCE {
            Ok((name.to_string(), got))
        } else {
            Err(capnp::Error::failed(format!(
                "{name}: expected {want}, got {got}"
            )))
        }
    }

    /// (a) A literal.
    pub async fn check_literal(calc: &calculator::Client) -> capnp::Result<Vec<(String, f64)>> {
        let v = read(&evaluate(calc, &Expr::Lit(123.0))).await?;
        Ok(vec![expect("123", v, 123.0)?])
    }

    /// (b) Operators from `getOperator`, used before their answers arrive:
    /// both `getOperator` calls, the `evaluate` and the `read` go out
    /// together.
    pub async fn check_operators(calc: &calculator::Client) -> capnp::Result<Vec<(String, f64)>> {
        let add = operator(calc, Operator::Add);
        let subtract = operator(calc, Operator::Subtract);
        let expr = call(
            &add,
            [
                call(&subtract, [Expr::Lit(123.0), Expr::Lit(45.0)]),
                Expr::Lit(67.0),
            ],
        );
        let v = read(&evaluate(calc, &expr)).await?;
        Ok(vec![expect("add(subtract(123, 45), 67)", v, 145.0)?])
    }

    /// (c) Scenario 11: an unread result `Value` used as `previousResult`
    /// in two concurrent follow-up evaluations. Every call (the operators,
    /// the three evaluations and the three reads) is sent before any answer
    /// is awaited: one round trip in all.
    pub async fn check_previous_result(
        calc: &calculator::Client,
    ) -> capnp::Result<Vec<(String, f64)>> {
        let add = operator(calc, Operator::Add);
        let multiply = operator(calc, Operator::Multiply);
        let subtract = operator(calc, Operator::Subtract);
        let first = evaluate(calc, &call(&add, [Expr::Lit(123.0), Expr::Lit(45.0)]));
        let doubled = evaluate(
            calc,
            &call(&multiply, [Expr::Prev(first.clone()), Expr::Lit(2.0)]),
        );
        let less = evaluate(
            calc,
            &call(&subtract, [Expr::Prev(first.clone()), Expr::Lit(68.0)]),
        );
        let (a, b, c) = futures::try_join!(read(&first), read(&doubled), read(&less))?;
        Ok(vec![
            expect("add(123, 45)", a, 168.0)?,
            expect("multiply(previousResult, 2)", b, 336.0)?,
            expect("subtract(previousResult, 68)", c, 100.0)?,
        ])
    }

    /// (d) Functions defined on the server: `f(x, y) = x * 100 + y` and
    /// `g(x) = f(x, x + 1) * 2`, where `g`'s body refers to `f` before
    /// `f`'s definition has been answered.
    pub async fn check_functions(calc: &calculator::Client) -> capnp::Result<Vec<(String, f64)>> {
        let add = operator(calc, Operator::Add);
        let multiply = operator(calc, Operator::Multiply);
        let f = def_function(
            calc,
            2,
            &call(
                &add,
                [
                    call(&multiply, [Expr::Param(0), Expr::Lit(100.0)]),
                    Expr::Param(1),
                ],
            ),
        );
        let g = def_function(
            calc,
            1,
            &call(
                &multiply,
                [
                    call(
                        &f,
                        [Expr::Param(0), call(&add, [Expr::Param(0), Expr::Lit(1.0)])],
                    ),
                    Expr::Lit(2.0),
                ],
            ),
        );
        let f_value = evaluate(calc, &call(&f, [Expr::Lit(12.0), Expr::Lit(34.0)]));
        let g_value = evaluate(calc, &call(&g, [Expr::Lit(21.0)]));
        let (fv, gv) = futures::try_join!(read(&f_value), read(&g_value))?;
        Ok(vec![
            expect("f(12, 34)", fv, 1234.0)?,
            expect("g(21)", gv, 4244.0)?,
        ])
    }

    /// `pow(base, exponent)`, implemented by the client: the server calls
    /// back into it.
    pub struct Pow;

    impl function::Server for Pow {
        async fn call(
            self: Rc<Self>,
            params: function::CallParams,
            mut results: function::CallResults,
        ) -> Result<(), capnp::Error> {
            let args: Vec<f64> = params.get()?.get_params()?.iter().collect();
            let [base, exponent] = args[..] else {
                return Err(capnp::Error::failed(format!(
                    "pow takes exactly 2 parameters, got {}",
                    args.len()
                )));
            };
            results.get().set_value(base.powf(exponent));
            Ok(())
        }
    }

    /// (e) A function of the client's own (hosted with `host`), passed in
    /// an expression: `add(pow(2, 4), 3)`.
    pub async fn check_client_function<H: Host>(
        calc: &calculator::Client,
        host: &H,
    ) -> capnp::Result<Vec<(String, f64)>> {
        let pow: function::Client = host.host(Pow);
        let add = operator(calc, Operator::Add);
        let expr = call(
            &add,
            [call(&pow, [Expr::Lit(2.0), Expr::Lit(4.0)]), Expr::Lit(3.0)],
        );
        let v = read(&evaluate(calc, &expr)).await?;
        Ok(vec![expect("add(pow(2, 4), 3)", v, 19.0)?])
    }

    /// All the checks, with the client's own function hosted by `host`;
    /// each result is the check's name and value. Fails at the first error
    /// or wrong value.
    pub async fn run_client_checks_with<H: Host>(
        calc: calculator::Client,
        host: &H,
    ) -> Result<Vec<(String, f64)>, capnp::Error> {
        let mut all = Vec::new();
        all.extend(check_literal(&calc).await?);
        all.extend(check_operators(&calc).await?);
        all.extend(check_previous_result(&calc).await?);
        all.extend(check_functions(&calc).await?);
        all.extend(check_client_function(&calc, host).await?);
        Ok(all)
    }

    /// All the checks, from a capnp-actix client.
    pub async fn run_client_checks(
        calc: calculator::Client,
    ) -> Result<Vec<(String, f64)>, capnp::Error> {
        run_client_checks_with(calc, &ActixHost).await
    }

    /// What [`run_client_checks`] returns when all is well.
    pub const EXPECTED: [(&str, f64); 8] = [
        ("123", 123.0),
        ("add(subtract(123, 45), 67)", 145.0),
        ("add(123, 45)", 168.0),
        ("multiply(previousResult, 2)", 336.0),
        ("subtract(previousResult, 68)", 100.0),
        ("f(12, 34)", 1234.0),
        ("g(21)", 4244.0),
        ("add(pow(2, 4), 3)", 19.0),
    ];
}
