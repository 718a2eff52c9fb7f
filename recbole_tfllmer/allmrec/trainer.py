"""ALLMRecTrainer: A-LLMRec trains in fixed stages, not per RecBole batch (seed-methods C.4).

fit() = stage 1 for `allmrec_stage1_epochs`, stage 2 for `allmrec_stage2_epochs` (with an LM),
one checkpoint of the final weights (their code infers with the last stage-2 epoch's; no
validation-based early stopping), then one validation pass on the candidate protocol so the
run reports a best-valid result like every other model. evaluate() is RecBole's, on the
candidate lists; the test evaluation also collects `hit@1_gen` (the generated title names
the target) when `allmrec_eval: both` and an LM is loaded.
"""

from recbole.trainer import Trainer

from recbole_tfllmer.trainer import _candidate_phase


class ALLMRecTrainer(Trainer):
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        model = self.model
        log = self.logger.info if verbose else (lambda message: None)
        losses = model.train_stage1(train_data._dataset, log=lambda m: log(f"{model.logger_prefix} {m}"))
        stage2 = model.train_stage2(train_data._dataset, log=lambda m: log(f"{model.logger_prefix} {m}"))
        for epoch, loss in enumerate([*losses, *stage2]):
            self.train_loss_dict[epoch] = float(loss)
        last_epoch = max(len(losses) + len(stage2) - 1, 0)
        if saved:
            self._save_checkpoint(last_epoch, verbose=verbose)
        if valid_data:
            result = self.evaluate(valid_data, load_best_model=False, show_progress=show_progress)
            self.best_valid_result = result
            self.best_valid_score = float(result[self.valid_metric])
            if callback_fn:
                callback_fn(last_epoch, self.best_valid_score)
        return self.best_valid_score, self.best_valid_result

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        generating = (
            _candidate_phase(eval_data) == "test"
            and self.model.soft_prompt is not None
            and self.model.options.eval == "both"
        )
        self.model.generation_hits = [] if generating else None
        try:
            result = super().evaluate(eval_data, load_best_model, model_file, show_progress)
            if generating and self.model.generation_hits:
                hits = self.model.generation_hits
                result["hit@1_gen"] = round(sum(hits) / len(hits), self.config["metric_decimal_place"])
            return result
        finally:
            self.model.generation_hits = None
