"""The roadside runtime: runners (and later frame sources and the pipeline). Never imports training code."""
