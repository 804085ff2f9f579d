"""`--mode=explore`: a page for playing with an exported generator. `logic` holds what it does (grids, picks,
walks, arithmetic, directions, image to z) and `app` the Gradio page; neither imports training code."""
