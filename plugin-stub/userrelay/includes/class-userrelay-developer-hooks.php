<?php
/**
 * Filters and actions for developers, and what holds whatever they return.
 *
 * Filter userrelay_outgoing_event ( array $event, int $user_id ): change an event before it is stored
 * in the outbox, or return false to drop it. Whatever a filter returns, the event keeps its
 * user's identity (user.id), its actions stay within the protocol's six, and no meta key that
 * may not be synced is sent (UserRelay_Protected_Meta): a filter cannot add one back.
 *
 * userrelay_outgoing_meta_keys ( string[] $keys, int $user_id ): the meta keys an outgoing
 * event carries (those that changed); a key a filter adds is sent with its value here if it
 * exists and may be synced; a key that may not be synced is never sent.
 *
 * userrelay_incoming_event ( array $event ): change a delivered event before it is applied, or
 * return false to leave it unapplied (answered 200 "dropped", taken once like any other). The
 * event keeps its id, origin, versions and link flags; actions stay within the six; a meta key
 * that may not be synced is left out; roles, the matched user and the versions are checked
 * after the filter as for any delivery, so no filter can grant a privileged role, touch a
 * privileged user or apply an older change over a newer one.
 *
 * userrelay_match_user ( WP_User|null $user, array $data, array $match ): the local user a
 * delivered user is, or null for none (then a create makes one). A user of another blog or a
 * privileged user is refused as if matched by email.
 *
 * userrelay_event_applied ( array $event, array $result ) and userrelay_event_refused ( array
 * $event, array $result ): after an event was applied (its transaction committed) or refused
 * (rolled back); $result is the event's answer (status, user_id, error). A throwing callback
 * is logged and changes no answer.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Developer hooks.
 */
final class UserRelay_Developer_Hooks {

	/**
	 * An outgoing event after the userrelay_outgoing_event filter; null when dropped.
	 *
	 * @param array $event   The event as the plugin built it (without its id).
	 * @param int   $user_id The user it is about.
	 * @return array|null
	 */
	public static function outgoing( array $event, int $user_id ): ?array {
		/**
		 * Filters an outgoing event before it is stored in the outbox.
		 *
		 * @param array $event   The event: actions, user (login, email, fields, meta), ...
		 * @param int   $user_id The user's id on this site.
		 * @return array|false The event to send, or false to send nothing.
		 */
		$filtered = apply_filters( 'userrelay_outgoing_event', $event, $user_id );
		if ( ! is_array( $filtered ) || ! isset( $filtered['user'] ) || ! is_array( $filtered['user'] ) ) {
			return null;
		}
		$filtered['user']['id'] = $event['user']['id'] ?? $user_id;
		$actions                = isset( $filtered['actions'] ) && is_array( $filtered['actions'] ) ? $filtered['actions'] : array();
		$filtered['actions']    = array_values( array_intersect( $actions, UserRelay_Facts::ACTIONS ) );
		if ( ! $filtered['actions'] ) {
			return null;
		}
		if ( isset( $filtered['user']['meta'] ) ) {
			$meta = array();
			foreach ( (array) $filtered['user']['meta'] as $key => $value ) {
				if ( UserRelay_Protected_Meta::is_syncable( (string) $key ) ) {
					$meta[ (string) $key ] = $value;
				}
			}
			$filtered['user']['meta'] = (object) $meta;
		}
		if ( isset( $filtered['user']['meta_deleted'] ) ) {
			$filtered['user']['meta_deleted'] = array_values( array_filter( array_map( 'strval', (array) $filtered['user']['meta_deleted'] ), array( 'UserRelay_Protected_Meta', 'is_syncable' ) ) );
		}
		return $filtered;
	}

	/**
	 * The meta keys an outgoing event carries, after the userrelay_outgoing_meta_keys filter:
	 * syncable keys only, each once.
	 *
	 * @param string[] $keys    The keys that changed (written or removed).
	 * @param int      $user_id The user.
	 * @return string[]
	 */
	public static function outgoing_meta_keys( array $keys, int $user_id ): array {
		/**
		 * Filters which meta keys an outgoing event carries.
		 *
		 * @param string[] $keys    The meta keys that changed in this request (written or removed).
		 * @param int      $user_id The user's id on this site.
		 * @return string[] The keys to send.
		 */
		$chosen = apply_filters( 'userrelay_outgoing_meta_keys', $keys, $user_id );
		$chosen = is_array( $chosen ) ? array_map( 'strval', array_filter( $chosen, 'is_scalar' ) ) : array();
		return array_values( array_unique( array_filter( $chosen, array( 'UserRelay_Protected_Meta', 'is_syncable' ) ) ) );
	}

	/**
	 * A delivered event after the userrelay_incoming_event filter; null when dropped.
	 *
	 * @param array $event A delivered event (its shape checked).
	 * @return array|null
	 * @throws UserRelay_Apply_Exception (422) When the filter returned a user without login or email.
	 */
	public static function incoming( array $event ): ?array {
		/**
		 * Filters a delivered event before it is applied.
		 *
		 * @param array $event The event: actions, user (login, email, fields, roles, meta), origin, ...
		 * @return array|false The event to apply, or false to leave it unapplied.
		 */
		$filtered = apply_filters( 'userrelay_incoming_event', $event );
		if ( ! is_array( $filtered ) ) {
			return null;
		}
		// What says which change this is and how it is ordered is the relay's, not the filter's.
		foreach ( array( 'id', 'origin', 'versions', 'source_wins', 'backfill', 'merged', 'occurred_at', 'create_missing' ) as $field ) {
			unset( $filtered[ $field ] );
			if ( array_key_exists( $field, $event ) ) {
				$filtered[ $field ] = $event[ $field ];
			}
		}
		$actions             = isset( $filtered['actions'] ) && is_array( $filtered['actions'] ) ? $filtered['actions'] : array();
		$filtered['actions'] = array_values( array_intersect( $actions, UserRelay_Facts::ACTIONS ) );
		if ( ! $filtered['actions'] ) {
			return null;
		}
		$user = isset( $filtered['user'] ) && is_array( $filtered['user'] ) ? $filtered['user'] : array();
		if ( ! isset( $user['login'], $user['email'] ) || ! is_string( $user['login'] ) || ! is_string( $user['email'] ) || '' === $user['login'] ) {
			throw new UserRelay_Apply_Exception( 'the userrelay_incoming_event filter left user.login empty or user.email not a string; the event was not applied', 422 );
		}
		if ( isset( $event['user']['id'] ) ) {
			$user['id'] = $event['user']['id'];
		}
		if ( isset( $user['meta'] ) && is_array( $user['meta'] ) ) {
			foreach ( array_keys( $user['meta'] ) as $key ) {
				if ( ! UserRelay_Protected_Meta::is_syncable( (string) $key ) ) {
					unset( $user['meta'][ $key ] );
					error_log( "UserRelay: the userrelay_incoming_event filter added meta key '{$key}', which may not be synced; left out" );
				}
			}
		}
		if ( isset( $user['meta_deleted'] ) && is_array( $user['meta_deleted'] ) ) {
			$user['meta_deleted'] = array_values( array_filter( array_map( 'strval', array_filter( $user['meta_deleted'], 'is_scalar' ) ), array( 'UserRelay_Protected_Meta', 'is_syncable' ) ) );
		}
		$filtered['user'] = $user;
		return $filtered;
	}

	/**
	 * The local user a delivered user is, after the userrelay_match_user filter.
	 *
	 * @param WP_User|null $user  The user found by the link's rule (match.user_id, email or login).
	 * @param array        $data  The event's user.
	 * @param array        $match The event's match.
	 */
	public static function match( ?WP_User $user, array $data, array $match ): ?WP_User {
		/**
		 * Filters the local user a delivered user is matched to.
		 *
		 * @param WP_User|null $user  The user found by the link's rule, or null.
		 * @param array        $data  The delivered user: login, email, fields, meta.
		 * @param array        $match How the link matches (by: email or login).
		 * @return WP_User|int|null The local user (or its id), or null for none.
		 */
		$chosen = apply_filters( 'userrelay_match_user', $user, $data, $match );
		if ( $chosen instanceof WP_User ) {
			$chosen = (int) $chosen->ID;
		}
		if ( is_numeric( $chosen ) && (int) $chosen > 0 ) {
			$found = get_userdata( (int) $chosen );
			return $found ? $found : null;
		}
		return null;
	}

	/**
	 * Runs userrelay_event_applied or userrelay_event_refused for an answered event; a
	 * callback that throws is logged and changes nothing of the answer.
	 *
	 * @param mixed $event  The event as delivered.
	 * @param array $result Its answer.
	 */
	public static function answered( $event, array $result ): void {
		$status = (int) $result['status'];
		if ( 208 === $status || ! is_array( $event ) ) {
			return; // Applied before: its actions ran then.
		}
		$hook = $status < 300 ? 'userrelay_event_applied' : 'userrelay_event_refused';
		try {
			/**
			 * Fires after a delivered event was applied (userrelay_event_applied: its transaction
			 * committed; a dropped or stale one included, as its result says) or refused
			 * (userrelay_event_refused: nothing of it was written).
			 *
			 * @param array $event  The event as delivered.
			 * @param array $result Its answer: id, status, user_id, error, stale, skipped, dropped.
			 */
			do_action( $hook, $event, $result );
		} catch ( Throwable $error ) {
			error_log( "UserRelay: a {$hook} callback failed: " . $error->getMessage() );
		}
	}
}
