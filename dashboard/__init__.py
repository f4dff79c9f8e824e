"""The Streamlit dashboard: `streamlit run dashboard/app.py`. Pages are thin; the logic lives in
plain modules (tables, charts, media, loaders) over `engine`."""
