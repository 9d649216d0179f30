"""Traffic forecasting: data loading, the evaluation protocol, baselines and the LSTM model."""
