"""Pure measurements on features: kNN, few-shot episodes, cluster quality."""
