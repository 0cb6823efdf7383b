<?php
/**
 * Filters and actions for developers, and what holds whatever they return.
 *
 * userrelay_outgoing_event ( array $event, int $user_id ): change an event before it is stored
 * in the outbox, or return false to drop it. Whatever a filter returns, the event keeps its
 * user's identity (user.id), its actions stay within the protocol's six, and no meta key that
 * may not be synced is sent (UserRelay_Protected_Meta): a filter cannot add one back.
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
		$filtered['actions']    = array_values( array_intersect( $actions, UserRelay_Delivery_Checks::ACTIONS ) );
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
}
