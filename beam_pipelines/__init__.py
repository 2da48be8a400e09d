"""Apache Beam batch pipelines over stepcrawl's stage functions: curate (with distributed
MinHash-LSH dedup and connected components), tokenize and build-mix, runnable on the
DirectRunner locally and unchanged on Dataflow, Flink or Spark. Depends on stepcrawl, tokenizer
and curricula; nothing depends on it."""
