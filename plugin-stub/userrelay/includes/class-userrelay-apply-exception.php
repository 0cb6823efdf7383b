<?php
/**
 * The refusal of one delivered event: thrown by the checks and writers while an event is
 * applied, caught by UserRelay_Applier, which rolls the event back and answers it with the
 * exception's code as the event's status and its message as the reason.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * A per-event refusal: its code is the status of the event's result, its message says why.
 */
final class UserRelay_Apply_Exception extends Exception {
}
