"""The browser UI: a Streamlit app that is a client of the public REST API and
nothing else. It imports neither backend nor TensorFlow."""
