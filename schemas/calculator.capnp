# The classic Cap'n Proto calculator sample, interoperable with other
# implementations' copies (type ids are derived from the file id and names).

@0x85150b117366d14b;

# Evaluates arithmetic expressions, with promise pipelining.
interface Calculator {
  evaluate @0 (expression :Expression) -> (value :Value);  # evaluate lazily
  defFunction @1 (paramCount :Int32, body :Expression) -> (func :Function);  # user function
  getOperator @2 (op :Operator) -> (func :Function);  # built-in operator

  # An arithmetic expression tree.
  struct Expression {
    union {
      literal @0 :Float64;  # constant
      previousResult @1 :Value;  # value from an earlier evaluate
      parameter @2 :UInt32;  # parameter index inside a defFunction body
      # Function application.
      call :group {
        function @3 :Function;  # function to call
        params @4 :List(Expression);  # its arguments
      }
    }
  }

  # A computed number.
  interface Value { read @0 () -> (value :Float64); }

  # A function of numbers.
  interface Function { call @0 (params :List(Float64)) -> (value :Float64); }

  # Built-in binary operators.
  enum Operator { add @0; subtract @1; multiply @2; divide @3; }
}
