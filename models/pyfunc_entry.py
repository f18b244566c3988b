"""Models-from-code entry: MLflow runs this file when it loads a logged recommender.

Logging the model by this file instead of a pickled object keeps the logged model independent of
cloudpickle and of the object's state at training time; the state lives in the artifacts.
"""

from mlflow.models import set_model

from models.pyfunc import RecommenderModel

set_model(RecommenderModel())
